"""Small helpers shared by the durable tests."""

from __future__ import annotations

import anyio

from stream_gateway.durable import DurableEngine, Operation


async def until_status(engine: DurableEngine, flow_id: str, *statuses: str) -> Operation:
    """Poll until the execution is in one of ``statuses`` (10 s against hangs)."""
    with anyio.fail_after(10):
        while True:
            op = await engine.get_state(flow_id)
            if op.status in statuses:
                return op
            await anyio.sleep(0.01)


async def finished(engine: DurableEngine, flow_id: str) -> Operation:
    """Wait for the end of the execution (10 s against hangs)."""
    with anyio.fail_after(10):
        return await engine.wait(flow_id)
