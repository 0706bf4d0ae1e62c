"""An expense approval: check the price, cool off, wait for a manager, then order.

Each stage is a durable step, so the flow survives restarts of the app at any point:
a restart during the cool-off or while waiting for the manager just picks up there.

Also: `trip_booking` (compensation: a declined payment cancels the bookings made
before it) and `pending_digest` (run on a recurring schedule by the app).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from pydantic import BaseModel, Field

from stream_gateway.durable import (
    DurableContext,
    DurableFlow,
    RetryPolicy,
    RollbackError,
    durable_flow,
)

logger = logging.getLogger("samples.approval")


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


class Trip(BaseModel):
    destination: str = Field(min_length=1)
    budget: float = Field(gt=0)


def charge(trip: Trip) -> dict[str, Any]:
    """Stand-in for a payment service: budgets over 1000 are declined, which rolls
    the trip back (the bookings made before are cancelled)."""
    if trip.budget > 1000:
        raise RollbackError(f"payment declined for {trip.budget}: over the 1000 limit")
    return {"charged": trip.budget}


def cancel(reference: str) -> None:
    """Stand-in for cancelling a booking (a rollback handler: it runs once)."""
    logger.info("cancelled booking %s", reference)


@durable_flow(input=Trip, output=dict[str, Any])
async def trip_booking(trip: Trip, ctx: DurableContext) -> dict[str, Any]:
    """Book a flight and a hotel, then pay; a declined payment cancels both."""
    await ctx.rollback_checkpoint("bookings")
    flight: str = await ctx.run("flight", lambda: f"FL-{trip.destination}", rollback=cancel)
    hotel: str = await ctx.run("hotel", lambda: f"HT-{trip.destination}", rollback=cancel)
    await ctx.note("booked", flight=flight, hotel=hotel)
    payment = await ctx.run("payment", lambda: charge(trip))
    return {"flight": flight, "hotel": hotel, "payment": payment}


@durable_flow(output=dict[str, Any])
async def pending_digest(_: None, ctx: DurableContext) -> dict[str, Any]:
    """Counts the expense approvals waiting for a manager (a recurring schedule runs
    it every weekday at 9:00, Paris time; see `app.py`)."""

    async def count() -> int:
        page = await ctx.engine.list(status="waiting", flow="expense_approval", limit=1000)
        return len(page.items)

    waiting: int = await ctx.run("count", count)
    await ctx.note("digest", waiting=waiting)
    return {"waiting": waiting}


#: Every flow of the sample (``--flows samples.approval.flows:FLOWS`` for a worker).
FLOWS: list[DurableFlow[Any, Any]] = [expense_approval, trip_booking, pending_digest]
