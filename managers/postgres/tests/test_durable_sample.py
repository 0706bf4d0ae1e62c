"""The durable approval sample on Postgres: its store named by a URL."""

from __future__ import annotations

import anyio
import httpx
import pytest
from samples.approval.app import make_app, make_engine

from stream_gateway_postgres import PostgresDurableStore
from stream_gateway_postgres.testing import PostgresServer

pytestmark = pytest.mark.anyio

ANN = {"x-user": "ann"}


async def test_the_approval_sample_runs_on_a_postgres_url(
    server: PostgresServer, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APPROVAL_COOL_OFF", "0.1")
    engine = make_engine(f"{server.dsn}#schema={schema}")
    assert isinstance(engine.store, PostgresDurableStore) and engine.store.schema == schema
    app = make_app(engine)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x")
    async with app.router.lifespan_context(app), client:
        expense = {"data": {"item": "desk", "amount": 100}}
        op = (await client.post("/durable/expense_approval", headers=ANN, json=expense)).json()
        url = f"/durable/ops/{op['name']}"
        with anyio.fail_after(20):
            while (await client.get(url, headers=ANN)).json()["status"] != "waiting":  # noqa: ASYNC110
                await anyio.sleep(0.05)
            decision = {"step": "approval", "payload": {"approved": True}}
            assert (await client.post(f"{url}/resume", headers=ANN, json=decision)).is_success
            while not (body := (await client.get(url, headers=ANN)).json())["done"]:  # noqa: ASYNC110
                await anyio.sleep(0.05)
    assert body["result"]["response"]["status"] == "ordered"
