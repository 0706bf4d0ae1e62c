"""A Gateway that also serves durable flows: one app, one auth model, one lifespan."""

from __future__ import annotations

import anyio
import httpx
import pytest
from pydantic import BaseModel

from stream_gateway import (
    DurableContext,
    DurableEngine,
    Gateway,
    InMemoryDurableStore,
    InMemoryStreamManager,
    durable_flow,
)
from tests.gateway.conftest import serve
from tests.servers.flows_app import bearer_auth, count

pytestmark = pytest.mark.anyio


class Decision(BaseModel):
    approved: bool


@durable_flow(input=int, output=str)
async def approve(amount: int, ctx: DurableContext) -> str:
    """Wait for a human, then answer."""
    decision: Decision = await ctx.interrupt("decide", Decision)
    return f"{amount} {'approved' if decision.approved else 'rejected'}"


async def test_gateway_serves_and_runs_durable_flows() -> None:
    engine = DurableEngine([approve], store=InMemoryDurableStore())
    gateway = Gateway(
        [count],
        stream_manager=InMemoryStreamManager(),
        context_provider=bearer_auth,
        durable=engine,
    )
    alice = {"authorization": "Bearer alice"}
    async with serve(gateway) as url, httpx.AsyncClient(base_url=url, timeout=10) as http:
        streamed = await http.post("/count?stream=true", json={"data": {"n": 2}}, headers=alice)
        assert streamed.text.endswith('data: {"result":{"total":2}}\n\n')

        scheduled = await http.post("/durable/approve", json={"data": 7}, headers=alice)
        assert scheduled.status_code == 200, scheduled.text
        op = scheduled.json()
        assert op["done"] is False
        state_url = f"/durable/ops/{op['name']}"
        with anyio.fail_after(10):
            while (await http.get(state_url, headers=alice)).json()["status"] != "waiting":  # noqa: ASYNC110
                await anyio.sleep(0.02)
        # The same context provider guards the durable routes.
        assert (await http.get(state_url)).status_code == 404
        assert (
            await http.get(state_url, headers={"authorization": "Bearer invalid"})
        ).status_code == 401
        resumed = await http.post(
            state_url + "/resume",
            json={"step": "decide", "payload": {"approved": True}},
            headers=alice,
        )
        assert resumed.status_code == 200, resumed.text
        with anyio.fail_after(10):
            while not (state := (await http.get(state_url, headers=alice)).json())["done"]:  # noqa: ASYNC110
                await anyio.sleep(0.02)
        assert state["result"] == {"response": "7 approved"}


def test_a_flow_named_durable_is_refused() -> None:
    from stream_gateway import flow

    @flow
    async def durable(data: object, ctx: object) -> None:
        """Clashes with the durable routes."""

    engine = DurableEngine([approve], store=InMemoryDurableStore())
    with pytest.raises(ValueError, match="durable"):
        Gateway([durable], durable=engine)
