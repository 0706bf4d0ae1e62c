"""An expense approval: check the price, cool off, wait for a manager, then order.

Each stage is a durable step, so the flow survives restarts of the app at any point:
a restart during the cool-off or while waiting for the manager just picks up there.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, Field

from stream_gateway.durable import DurableContext, RetryPolicy, durable_flow


class Expense(BaseModel):
    item: str = Field(min_length=1)
    amount: float = Field(gt=0)


class Decision(BaseModel):
    approved: bool
    comment: str = ""


def cool_off_seconds() -> float:
    """How long requests rest before a manager may decide (``APPROVAL_COOL_OFF``)."""
    return float(os.environ.get("APPROVAL_COOL_OFF", "10"))


def price_check(expense: Expense) -> dict[str, Any]:
    """Stand-in for a call to a pricing service (a side effect: it runs once)."""
    return {"item": expense.item, "list_price": round(expense.amount * 1.05, 2)}


@durable_flow(input=Expense, output=dict[str, Any])
async def expense_approval(expense: Expense, ctx: DurableContext) -> dict[str, Any]:
    """Price check, cool-off, manager approval (interrupt ``approval``), then order."""
    quote = await ctx.run(
        "price-check", lambda: price_check(expense), retry=RetryPolicy(max_attempts=5)
    )
    await ctx.sleep("cool-off", cool_off_seconds())
    decision: Decision = await ctx.interrupt("approval", Decision)
    if not decision.approved:
        return {"status": "rejected", "comment": decision.comment, "quote": quote}
    order_id = str(await ctx.uuid())
    await ctx.run("place-order", lambda: {"order": order_id, "item": expense.item})
    return {"status": "ordered", "order": order_id, "comment": decision.comment, "quote": quote}
