"""Durable flows the command-line tests run: one for each state an operator acts on."""

from __future__ import annotations

from typing import Any

from stream_gateway.durable import DurableContext, DurableFlow, RetryPolicy, durable_flow


@durable_flow("approve", input=str, output=str)
async def approve(order: str, ctx: DurableContext) -> str:
    """Waits for a human: resumed with a bool."""
    approved = await ctx.interrupt("approval", schema=bool)
    return f"{order}: {'approved' if approved else 'refused'}"


@durable_flow("listen")
async def listen(_: object, ctx: DurableContext) -> object:
    """Waits for the signal ``go`` and returns its payload."""
    return await ctx.wait_for_signal("go", "go")


@durable_flow("nap")
async def nap(_: object, ctx: DurableContext) -> str:
    """Sleeps an hour (a wake ends the nap only for a poll; the timer parks it again)."""
    await ctx.sleep("nap", 3600)
    return "rested"


def _boom() -> None:
    raise RuntimeError("the payment service said no")


@durable_flow("flaky")
async def flaky(_: object, ctx: DurableContext) -> None:
    """Fails at once: its step raises and is not retried."""
    await ctx.run("charge", _boom, retry=RetryPolicy(max_attempts=1))


FLOWS: list[DurableFlow[Any, Any]] = [approve, listen, nap, flaky]
