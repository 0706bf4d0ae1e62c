"""The approval sample, through its HTTP routes and its lifespan, stage by stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from samples.approval.app import make_app, make_engine

pytestmark = pytest.mark.anyio

ANN = {"x-user": "ann"}


async def state(c: httpx.AsyncClient, flow_id: str, *statuses: str) -> dict[str, Any]:
    with anyio.fail_after(15):
        while True:
            body: dict[str, Any] = (await c.get(f"/durable/ops/{flow_id}", headers=ANN)).json()
            if body["status"] in statuses:
                return body
            await anyio.sleep(0.02)


async def test_approval_sample_end_to_end_with_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APPROVAL_COOL_OFF", "0.3")
    db = str(tmp_path / "approval.sqlite3")

    async def serve() -> Any:
        app = make_app(make_engine(db))
        return app, httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x")

    app, c = await serve()
    async with app.router.lifespan_context(app), c:
        r = await c.post(
            "/durable/expense_approval", json={"data": {"item": "laptop", "amount": 100}}
        )
        assert r.status_code == 401
        op = (
            await c.post(
                "/durable/expense_approval",
                headers=ANN,
                json={"data": {"item": "laptop", "amount": 100}},
            )
        ).json()
        slept = await state(c, op["name"], "sleeping")
        assert slept["blockedOnStep"] == "cool-off"
    app, c = await serve()  # a restart during the cool-off
    async with app.router.lifespan_context(app), c:
        waiting = await state(c, op["name"], "waiting")
        assert waiting["blockedOnStep"] == "approval"
        url = f"/durable/ops/{op['name']}/resume"
        bad = await c.post(
            url, headers=ANN, json={"step": "approval", "payload": {"approved": "?"}}
        )
        assert bad.status_code == 400
        ok = await c.post(
            url,
            headers=ANN,
            json={"step": "approval", "payload": {"approved": True, "comment": "ok"}},
        )
        assert ok.status_code == 200
        done = await state(c, op["name"], "completed")
    response = done["result"]["response"]
    assert response["status"] == "ordered" and response["comment"] == "ok"
    assert response["quote"] == {"item": "laptop", "list_price": 105.0}


async def test_sample_trip_compensation_and_its_recurring_schedule(tmp_path: Path) -> None:
    engine = make_engine(str(tmp_path / "approval.sqlite3"))
    app = make_app(engine)
    c = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x")
    async with app.router.lifespan_context(app), c:
        schedule = await engine.get_schedule("pending-digest")
        assert schedule.cron == "0 9 * * mon-fri" and schedule.next_at is not None
        ok = (
            await c.post(
                "/durable/trip_booking",
                headers=ANN,
                json={"data": {"destination": "Lisbon", "budget": 500}},
            )
        ).json()
        declined = (
            await c.post(
                "/durable/trip_booking",
                headers=ANN,
                json={"data": {"destination": "Lisbon", "budget": 5000}},
            )
        ).json()
        booked = await state(c, ok["name"], "completed")
        failed = await state(c, declined["name"], "failed")
        detail = (await c.get(f"/durable/ops/{declined['name']}/detail", headers=ANN)).json()
        digest = await engine.run("pending_digest")
    assert booked["result"]["response"]["payment"] == {"charged": 500.0}
    assert "payment declined" in failed["result"]["error"]["message"]
    timeline = [(a["kind"], a.get("step"), a["data"].get("status")) for a in detail["timeline"]]
    assert ("status", None, "rolling_back") in timeline
    undone = [step for kind, step, _ in timeline if kind == "rollback"]
    assert undone == ["$rollback/undo:hotel", "$rollback/undo:flight"]
    assert digest == {"waiting": 0}
