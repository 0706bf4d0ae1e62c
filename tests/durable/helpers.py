"""Small helpers shared by the durable tests."""

from __future__ import annotations

import anyio

from stream_gateway.durable import DurableEngine, Operation


async def until_status(engine: DurableEngine, flow_id: str, *statuses: str) -> Operation:
    """Poll until the execution is in one of ``statuses`` (60 s against hangs only: a
    loaded machine with the Firestore emulator can take 15 s where a quiet one takes 1)."""
    with anyio.fail_after(60):
        while True:
            op = await engine.get_state(flow_id)
            if op.status in statuses:
                return op
            await anyio.sleep(0.01)


async def finished(engine: DurableEngine, flow_id: str) -> Operation:
    """Wait for the end of the execution (60 s against hangs only, as `until_status`)."""
    with anyio.fail_after(60):
        return await engine.wait(flow_id)
