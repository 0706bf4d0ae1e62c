"""The HTTP routes: every endpoint, auth and ownership, malformed and unknown ids."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount

from stream_gateway import PermissionDeniedError, RequestContext, UnauthenticatedError
from stream_gateway.durable import (
    DurableContext,
    DurableEngine,
    DurableStoreError,
    InMemoryDurableStore,
    durable_flow,
    durable_routes,
)

from .conftest import StartEngine

pytestmark = pytest.mark.anyio


class Approval(BaseModel):
    approved: bool


@durable_flow(input=int, output=str)
async def approve(amount: int, ctx: DurableContext) -> str:
    """Asks a human."""
    answer: Approval = await ctx.interrupt("approve", Approval)
    return f"{amount} {'approved' if answer.approved else 'rejected'}"


@durable_flow(output=int)
async def quick(_: None, ctx: DurableContext) -> int:
    one: int = await ctx.run("one", lambda: 1)
    return one


async def auth(request: Request) -> RequestContext:
    token = request.headers.get("authorization", "")
    if not token.startswith("Bearer "):
        raise UnauthenticatedError("missing credentials")
    user = token.removeprefix("Bearer ")
    if user == "banned":
        raise PermissionDeniedError("banned")
    return RequestContext(principal=user)


ANN = {"authorization": "Bearer ann"}
BOB = {"authorization": "Bearer bob"}
JSON_ANN = {**ANN, "content-type": "application/json"}


@pytest.fixture
async def client(start: StartEngine) -> AsyncIterator[tuple[httpx.AsyncClient, DurableEngine]]:
    async with start([approve, quick]) as (engine, _):
        app = Starlette(routes=[Mount("/durable", durable_routes(engine, context_provider=auth))])
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield c, engine


async def until(c: httpx.AsyncClient, flow_id: str, *statuses: str) -> dict[str, Any]:
    with anyio.fail_after(10):
        while True:
            body: dict[str, Any] = (await c.get(f"/durable/ops/{flow_id}", headers=ANN)).json()
            if body["status"] in statuses:
                return body
            await anyio.sleep(0.01)


async def test_schedule_get_resume_complete(
    client: tuple[httpx.AsyncClient, DurableEngine],
) -> None:
    c, _ = client
    r = await c.post("/durable/approve", json={"data": 100}, headers=ANN)
    assert r.status_code == 200
    op = r.json()
    assert op["done"] is False and op["flow"] == "approve" and "result" not in op
    waiting = await until(c, op["name"], "waiting")
    assert waiting["blockedOnStep"] == "approve"
    r = await c.post(
        f"/durable/ops/{op['name']}/resume",
        json={"step": "approve", "payload": {"approved": True}},
        headers=ANN,
    )
    assert r.status_code == 200 and r.json()["done"] is False
    done = await until(c, op["name"], "completed")
    assert done["done"] is True and done["result"] == {"response": "100 approved"}


async def test_schedule_options_and_errors(client: tuple[httpx.AsyncClient, DurableEngine]) -> None:
    c, _ = client
    later = (await c.post("/durable/quick", json={"delay": 60}, headers=ANN)).json()
    assert later["status"] == "pending" and "wakeAt" in later
    at = (await c.post("/durable/quick", json={"at": "2100-01-01T00:00:00Z"}, headers=ANN)).json()
    assert at["wakeAt"].startswith("2100-01-01")
    a = await c.post("/durable/quick", json={"idempotencyKey": "k1"}, headers=ANN)
    b = await c.post(
        "/durable/quick",
        headers={**ANN, "idempotency-key": "k1", "content-type": "application/json"},
    )
    assert a.json()["name"] == b.json()["name"]
    cases = [
        ("/durable/nope", {"data": 1}, 404, "NOT_FOUND"),
        ("/durable/approve", {"data": "lots"}, 400, "INVALID_ARGUMENT"),
        ("/durable/approve", [1], 400, "INVALID_ARGUMENT"),
        ("/durable/quick", {"delay": -1}, 400, "INVALID_ARGUMENT"),
        ("/durable/quick", {"at": "tomorrow"}, 400, "INVALID_ARGUMENT"),
        ("/durable/quick", {"at": "2100-01-01T00:00:00"}, 400, "INVALID_ARGUMENT"),
        ("/durable/quick", {"idempotencyKey": 5}, 400, "INVALID_ARGUMENT"),
    ]
    for path, body, code, status in cases:
        r = await c.post(path, json=body, headers=ANN)
        assert (r.status_code, r.json()["error"]["status"]) == (code, status), (path, body)
    r = await c.post(
        "/durable/quick", content=b"{", headers={**ANN, "content-type": "application/json"}
    )
    assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"
    r = await c.post("/durable/quick", content=b"x" * 2_000_000, headers=ANN)
    assert r.status_code == 413


async def test_auth_on_every_route(client: tuple[httpx.AsyncClient, DurableEngine]) -> None:
    c, _ = client
    op = (await c.post("/durable/approve", json={"data": 1}, headers=ANN)).json()
    routes = [
        ("GET", "/durable/"),
        ("GET", "/durable/ops"),
        ("POST", "/durable/approve"),
        ("GET", f"/durable/ops/{op['name']}"),
        ("POST", f"/durable/ops/{op['name']}/resume"),
        ("POST", f"/durable/ops/{op['name']}/cancel"),
        ("POST", f"/durable/ops/{op['name']}/cleanup"),
        ("POST", f"/durable/ops/{op['name']}/evict"),
        ("DELETE", f"/durable/ops/{op['name']}"),
    ]
    for method, path in routes:
        r = await c.request(method, path)
        assert r.status_code == 401, path
        assert r.json() == {
            "error": {"status": "UNAUTHENTICATED", "message": "missing credentials"}
        }
        r = await c.request(method, path, headers={"authorization": "Bearer banned"})
        assert r.status_code == 403 and r.json()["error"]["status"] == "PERMISSION_DENIED"
    assert (await c.get(f"/durable/ops/{op['name']}", headers=ANN)).json()["status"] != "cancelled"


async def test_other_principals_see_not_found(
    client: tuple[httpx.AsyncClient, DurableEngine],
) -> None:
    c, _ = client
    op = (await c.post("/durable/approve", json={"data": 1}, headers=ANN)).json()
    await until(c, op["name"], "waiting")
    ops = f"/durable/ops/{op['name']}"
    for method, path, body in [
        ("GET", ops, None),
        ("POST", f"{ops}/resume", {"step": "approve", "payload": {"approved": True}}),
        ("POST", f"{ops}/cancel", None),
        ("POST", f"{ops}/evict", None),
        ("DELETE", ops, None),
        ("POST", f"{ops}/cleanup", None),
    ]:
        r = await c.request(method, path, json=body, headers=BOB)
        assert r.status_code == 404 and r.json()["error"]["status"] == "NOT_FOUND", path
    assert (await c.get("/durable/ops", headers=BOB)).json() == {
        "operations": [],
        "nextCursor": None,
    }
    assert (await c.get(ops, headers=ANN)).json()["status"] == "waiting"  # untouched


async def test_malformed_and_unknown_ids(client: tuple[httpx.AsyncClient, DurableEngine]) -> None:
    c, _ = client
    for bad in ("a b", "x" * 129, "has.dots.in.it.xxxxxxx", "%24%7Bwhere%7D-xxxxxxxxxxx"):
        r = await c.get(f"/durable/ops/{bad}", headers=ANN)
        assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT", bad
        assert bad not in r.text
    # An encoded path traversal matches no route at all: a JSON 404 all the same.
    r = await c.get("/durable/ops/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd", headers=ANN)
    assert r.status_code == 404 and r.json()["error"]["status"] == "NOT_FOUND"
    unknown = "A" * 22
    for method, path in [
        ("GET", f"/durable/ops/{unknown}"),
        ("DELETE", f"/durable/ops/{unknown}"),
        ("POST", f"/durable/ops/{unknown}/resume"),
        ("POST", f"/durable/ops/{unknown}/cleanup"),
        ("POST", f"/durable/ops/{unknown}/evict"),
    ]:
        r = await c.request(method, path, headers=ANN)
        assert r.status_code == 404 and r.json()["error"]["status"] == "NOT_FOUND", path


async def test_resume_errors(client: tuple[httpx.AsyncClient, DurableEngine]) -> None:
    c, _ = client
    op = (await c.post("/durable/approve", json={"data": 1}, headers=ANN)).json()
    await until(c, op["name"], "waiting")
    url = f"/durable/ops/{op['name']}/resume"
    r = await c.post(url, json={"step": "approve", "payload": {"approved": "perhaps"}}, headers=ANN)
    assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert r.json()["error"]["details"][0]["loc"] == ["approved"]
    r = await c.post(url, json={"step": "approve", "payload": {"approved": True}}, headers=ANN)
    assert r.status_code == 200
    r = await c.post(url, json={"step": "approve", "payload": {"approved": True}}, headers=ANN)
    assert r.status_code == 400 and r.json()["error"]["status"] == "FAILED_PRECONDITION"
    r = await c.post(url, json={"payload": {}}, headers=ANN)
    assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"


async def test_cancel_cleanup_list(client: tuple[httpx.AsyncClient, DurableEngine]) -> None:
    c, _ = client
    names = [
        (await c.post("/durable/approve", json={"data": i}, headers=ANN)).json()["name"]
        for i in range(3)
    ]
    for name in names:
        await until(c, name, "waiting")
    r = await c.post(f"/durable/ops/{names[0]}/cleanup", headers=ANN)
    assert r.status_code == 400 and r.json()["error"]["status"] == "FAILED_PRECONDITION"
    r = await c.delete(f"/durable/ops/{names[0]}", headers=ANN)
    assert r.json()["status"] == "cancelled"
    assert r.json()["result"]["error"]["status"] == "CANCELLED"
    r = await c.post(f"/durable/ops/{names[1]}/cancel", headers=ANN)
    assert r.json()["status"] == "cancelled"
    r = await c.post(f"/durable/ops/{names[0]}/cleanup", headers=ANN)
    assert r.json() == {"name": names[0], "deleted": True}
    assert (await c.get(f"/durable/ops/{names[0]}", headers=ANN)).status_code == 404

    page = (await c.get("/durable/ops?limit=1", headers=ANN)).json()
    assert [op["name"] for op in page["operations"]] == [names[2]]
    rest = (await c.get(f"/durable/ops?limit=5&cursor={page['nextCursor']}", headers=ANN)).json()
    assert [op["name"] for op in rest["operations"]] == [names[1]] and rest["nextCursor"] is None
    waiting = (await c.get("/durable/ops?status=waiting&flow=approve", headers=ANN)).json()
    assert [op["name"] for op in waiting["operations"]] == [names[2]]
    for query in ("status=bogus", "limit=zero", "limit=0", "cursor=abc"):
        r = await c.get(f"/durable/ops?{query}", headers=ANN)
        assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT", query


async def test_describe(client: tuple[httpx.AsyncClient, DurableEngine]) -> None:
    c, _ = client
    flows = (await c.get("/durable/", headers=ANN)).json()["flows"]
    by_name = {f["name"]: f for f in flows}
    assert by_name["approve"]["description"] == "Asks a human."
    assert by_name["approve"]["schemas"] == {
        "input": {"type": "integer"},
        "output": {"type": "string"},
    }


async def test_out_of_range_times_are_refused_before_anything_is_stored(
    client: tuple[httpx.AsyncClient, DurableEngine],
) -> None:
    c, _ = client
    for when in (
        {"delay": 1e12},
        {"delay": 1e308},
        {"delay": -1},
        {"at": 1e12},
        {"at": -1},
        {"at": "0001-01-01T00:00:00Z"},
        {"at": "9999-12-31T23:59:59.999999-05:00"},
        {"at": ["2030"]},
    ):
        r = await c.post("/durable/quick", json={"data": None, **when}, headers=ANN)
        assert r.status_code == 400, (when, r.text)
    r = await c.post("/durable/quick", content=b'{"delay": 1e400}', headers=JSON_ANN)
    assert r.status_code == 400, r.text
    listing = await c.get("/durable/ops", headers=ANN)
    assert listing.status_code == 200 and listing.json()["operations"] == []


async def test_non_ascii_digits_in_limit_and_cursor_are_400(
    client: tuple[httpx.AsyncClient, DurableEngine],
) -> None:
    c, _ = client
    for query in ("limit=²", "cursor=①", "limit=١٢", "cursor=²³"):
        r = await c.get(f"/durable/ops?{query}", headers=ANN)
        assert r.status_code == 400, (query, r.text)
        assert r.json()["error"]["status"] == "INVALID_ARGUMENT"


async def test_signals_over_http(client: tuple[httpx.AsyncClient, DurableEngine]) -> None:
    c, engine = client
    op = (await c.post("/durable/approve", json={"data": 1}, headers=ANN)).json()
    url = f"/durable/ops/{op['name']}/signals/poke"
    r = await c.post(url, json={"payload": {"n": 1}}, headers=ANN)
    assert r.status_code == 200, r.text
    assert [(s.name, s.payload) for s in (await engine.store.history(op["name"])).signals] == [
        ("poke", '{"n":1}')
    ]
    assert (await c.post(url, json={"payload": 1}, headers=BOB)).status_code == 404
    bad = f"/durable/ops/{op['name']}/signals/$resume:approve"
    assert (await c.post(bad, json={"payload": 1}, headers=ANN)).status_code == 400


async def test_gateway_takes_a_worker_with_its_options() -> None:
    from stream_gateway import Gateway

    engine = DurableEngine([quick], store=InMemoryDurableStore())
    worker = engine.worker(worker_id="web-1", lease=2.0, poll_interval=0.05)
    gateway = Gateway([], durable=worker)
    assert gateway.durable is engine and gateway.durable_worker is worker
    async with gateway.lifespan():
        assert worker.worker_id == "web-1" and worker.lease == 2.0
        transport = httpx.ASGITransport(app=gateway)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            op = (await c.post("/durable/quick", json={"data": None})).json()
            with anyio.fail_after(10):
                done = await engine.wait(op["name"])
    assert done.response == 1


class _DownStore(InMemoryDurableStore):
    """A store whose reads fail as a locked database would, with a revealing text."""

    async def list_executions(self, **kwargs: Any) -> Any:
        raise DurableStoreError("database is locked: /srv/secret/durable.sqlite3")


async def test_store_failures_answer_503_without_the_backends_text() -> None:
    engine = DurableEngine([quick], store=_DownStore())
    app = Starlette(routes=[Mount("/durable", durable_routes(engine, context_provider=auth))])
    transport = httpx.ASGITransport(app=app)
    async with engine, httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        r = await c.get("/durable/ops", headers=ANN)
    assert r.status_code == 503 and r.json()["error"]["status"] == "UNAVAILABLE"
    assert "secret" not in r.text and "locked" not in r.text
