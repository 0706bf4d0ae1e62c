"""The operator API: every route refuses without operator auth and works with it, and
an operator sees and acts across owners."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import pytest
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount

from stream_gateway import (
    InMemoryStreamManager,
    RequestContext,
    UnauthenticatedError,
)
from stream_gateway._ids import owner_key
from stream_gateway.durable import (
    DurableContext,
    DurableEngine,
    InMemoryDurableStore,
    RetryPolicy,
    durable_flow,
)
from stream_gateway.operator import operator_app, token_auth

pytestmark = pytest.mark.anyio

TOKEN = "operator-token-0123456789"
OPERATOR = {"authorization": f"Bearer {TOKEN}"}


class Decision(BaseModel):
    approved: bool
    comment: str = ""


class Ping(BaseModel):
    count: int


@durable_flow(input=int, output=dict[str, Any])
async def approval(amount: int, ctx: DurableContext) -> dict[str, Any]:
    decision: Decision = await ctx.interrupt("decide", Decision)
    return {"amount": amount, "approved": decision.approved}


@durable_flow(output=int)
async def pinged(_: None, ctx: DurableContext) -> int:
    ping: Ping = await ctx.wait_for_signal("ping", "ping", schema=Ping)
    return ping.count


FLAKY = {"fail": True}


def fragile() -> str:
    if FLAKY["fail"]:
        raise RuntimeError("the upstream service is down")
    return "fixed"


@durable_flow(output=str)
async def breaks(_: None, ctx: DurableContext) -> str:
    value: str = await ctx.run("call", fragile, retry=RetryPolicy(max_attempts=1))
    return value


@durable_flow(output=str)
async def naps(_: None, ctx: DurableContext) -> str:
    await ctx.sleep("nap", 3600)
    return "rested"


@dataclass
class Setup:
    client: httpx.AsyncClient
    engine: DurableEngine
    streams: InMemoryStreamManager


async def user(request: Request) -> RequestContext:
    name = request.headers.get("x-user")
    if not name:
        raise UnauthenticatedError("no user")
    return RequestContext(principal=name)


@asynccontextmanager
async def serve(**options: Any) -> AsyncIterator[Setup]:
    engine = DurableEngine(
        [approval, pinged, breaks, naps], store=InMemoryDurableStore(), poll_interval=0.02
    )
    streams = InMemoryStreamManager()
    app = Starlette(
        routes=[Mount("/operator", operator_app(engine=engine, streams=streams, **options))]
    )
    transport = httpx.ASGITransport(app=app)
    async with (
        engine,
        engine.worker(poll_interval=0.02, lease=5.0, grace=1.0),
        streams,
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        yield Setup(client, engine, streams)


async def settled(engine: DurableEngine, flow_id: str, *statuses: str) -> dict[str, Any]:
    with anyio.fail_after(10):
        while True:
            op = await engine.get_state(flow_id)
            if op.status in statuses:
                return op.to_json()
            await anyio.sleep(0.01)


def routes(ids: dict[str, str]) -> list[tuple[str, str, Any]]:
    """Every API route, with a body where it takes one."""
    e, s, sch = ids["execution"], ids["stream"], ids["schedule"]
    return [
        ("GET", "/operator/api/whoami", None),
        ("GET", "/operator/api/features", None),
        ("GET", "/operator/api/streams", None),
        ("GET", f"/operator/api/streams/{s}", None),
        ("GET", f"/operator/api/streams/{s}/tail", None),
        ("POST", f"/operator/api/streams/{s}/cancel", None),
        ("POST", f"/operator/api/streams/{s}/stop", None),
        ("GET", "/operator/api/flows", None),
        ("GET", "/operator/api/flows/approval/shape", None),
        ("GET", "/operator/api/executions", None),
        ("GET", f"/operator/api/executions/{e}", None),
        ("POST", f"/operator/api/executions/{e}/cancel", None),
        ("POST", f"/operator/api/executions/{e}/resume", {"step": "decide", "payload": {}}),
        ("POST", f"/operator/api/executions/{e}/signals/ping", {"payload": {"count": 1}}),
        ("POST", f"/operator/api/executions/{e}/recover", None),
        ("POST", f"/operator/api/executions/{e}/wake", None),
        ("GET", "/operator/api/schedules", None),
        ("POST", f"/operator/api/schedules/{sch}/pause", None),
        ("POST", f"/operator/api/schedules/{sch}/resume", None),
    ]


async def fixtures(setup: Setup) -> dict[str, str]:
    op = await setup.engine.schedule(approval, 5, owner=owner_key("ann"))
    writer = await setup.streams.open(flow="chat", owner=owner_key("ann"))
    await writer.write("hello")
    await writer.done("hello")
    await setup.engine.ensure_schedule(naps, id="nightly", cron="0 3 * * *")
    return {"execution": op.name, "stream": writer.stream_id, "schedule": "nightly"}


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"authorization": "Bearer not-the-operator-token"}, 403),
        ({"authorization": "Basic b3A6b3A="}, 401),
    ],
)
async def test_every_route_refuses_without_operator_auth(
    headers: dict[str, str], status: int
) -> None:
    async with serve(auth=token_auth({TOKEN: "ops"})) as setup:
        ids = await fixtures(setup)
        await settled(setup.engine, ids["execution"], "waiting")
        for method, url, body in routes(ids):
            response = await setup.client.request(method, url, json=body, headers=headers)
            assert response.status_code == status, (method, url, response.text)
            assert response.json()["error"]["status"] in ("UNAUTHENTICATED", "PERMISSION_DENIED")
        # Nothing was done: the execution still waits, the schedule runs, the stream is as it was.
        assert (await setup.engine.get_state(ids["execution"])).status == "waiting"
        assert not (await setup.engine.get_schedule("nightly")).paused


async def test_without_auth_configured_everything_is_refused_naming_the_option(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, "stream_gateway.operator"):
        async with serve() as setup:
            ids = await fixtures(setup)
            for method, url, body in routes(ids):
                response = await setup.client.request(method, url, json=body, headers=OPERATOR)
                assert response.status_code == 403, (method, url)
                message = response.json()["error"]["message"]
                assert "dangerously_allow_unauthenticated=True" in message
                assert "auth=" in message
    assert any("no auth" in r.getMessage() for r in caplog.records)


async def test_the_page_and_its_assets_are_served_by_the_app_without_data() -> None:
    async with serve(auth=token_auth({TOKEN: "ops"})) as setup:
        page = await setup.client.get("/operator/")
        assert page.status_code == 200
        assert "default-src 'self'" in page.headers["content-security-policy"]
        for asset in ("static/operator.js", "static/operator.css"):
            assert f'"{asset}"' in page.text
            response = await setup.client.get(f"/operator/{asset}")
            assert response.status_code == 200 and len(response.content) > 500
        assert "http://" not in page.text and "https://" not in page.text


async def test_whoami_and_features_with_the_token() -> None:
    async with serve(auth=token_auth({TOKEN: "ops"})) as setup:
        who = await setup.client.get("/operator/api/whoami", headers=OPERATOR)
        assert who.json() == {"operator": "ops"}
        features = await setup.client.get("/operator/api/features", headers=OPERATOR)
        assert features.json() == {"streams": True, "durable": True}


async def test_a_dashboard_over_streams_only_has_no_durable_routes() -> None:
    async with InMemoryStreamManager() as streams:
        app = Starlette(
            routes=[Mount("/ops", operator_app(streams=streams, auth=token_auth({TOKEN: "o"})))]
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            features = await client.get("/ops/api/features", headers=OPERATOR)
            assert features.json() == {"streams": True, "durable": False}
            missing = await client.get("/ops/api/executions", headers=OPERATOR)
            assert missing.status_code == 404
            assert missing.json()["error"]["status"] == "NOT_FOUND"
            assert (await client.get("/ops/api/streams", headers=OPERATOR)).status_code == 200


async def test_dangerously_allow_unauthenticated_opens_it() -> None:
    async with serve(dangerously_allow_unauthenticated=True) as setup:
        response = await setup.client.get("/operator/api/whoami")
        assert response.status_code == 200
        assert response.json() == {"operator": "anonymous operator"}


def test_misconfigurations_are_refused_at_once() -> None:
    engine = DurableEngine([approval], store=InMemoryDurableStore())
    with pytest.raises(ValueError, match="engine, a stream manager"):
        operator_app(auth=token_auth({TOKEN: "ops"}))
    with pytest.raises(ValueError, match="not both"):
        operator_app(engine=engine, auth=user, dangerously_allow_unauthenticated=True)
    with pytest.raises(ValueError, match="16 characters"):
        token_auth({"short": "ops"})
    with pytest.raises(ValueError, match="at least one"):
        token_auth({})


async def test_reads_show_every_owner_with_operator_detail() -> None:
    FLAKY["fail"] = True
    async with serve(auth=token_auth({TOKEN: "ops"})) as setup:
        ann = await setup.engine.schedule(approval, 5, owner=owner_key("ann"))
        bob = await setup.engine.schedule(breaks, owner=owner_key("bob"))
        await settled(setup.engine, ann.name, "waiting")
        await settled(setup.engine, bob.name, "failed")
        c = setup.client

        listed = (await c.get("/operator/api/executions", headers=OPERATOR)).json()
        owners = {x["name"]: x["owner"] for x in listed["executions"]}
        assert owners == {ann.name: owner_key("ann"), bob.name: owner_key("bob")}

        by_principal = await c.get("/operator/api/executions?principal=bob", headers=OPERATOR)
        assert [x["name"] for x in by_principal.json()["executions"]] == [bob.name]
        by_hash = await c.get(
            f"/operator/api/executions?owner={owner_key('ann')}", headers=OPERATOR
        )
        assert [x["name"] for x in by_hash.json()["executions"]] == [ann.name]
        failed = await c.get("/operator/api/executions?status=failed", headers=OPERATOR)
        assert [x["name"] for x in failed.json()["executions"]] == [bob.name]
        by_flow = await c.get("/operator/api/executions?flow=approval", headers=OPERATOR)
        assert [x["name"] for x in by_flow.json()["executions"]] == [ann.name]
        page = await c.get("/operator/api/executions?limit=1", headers=OPERATOR)
        cursor = page.json()["nextCursor"]
        rest = await c.get(f"/operator/api/executions?limit=1&cursor={cursor}", headers=OPERATOR)
        assert len(page.json()["executions"]) == len(rest.json()["executions"]) == 1
        assert page.json()["executions"][0]["name"] != rest.json()["executions"][0]["name"]

        # The failed one's detail keeps the original error text (operators see it).
        detail = (await c.get(f"/operator/api/executions/{bob.name}", headers=OPERATOR)).json()
        assert detail["execution"]["status"] == "failed"
        assert "the upstream service is down" in str(detail["execution"]["error"])
        assert [s["path"] for s in detail["steps"]] == ["call"]
        assert "the upstream service is down" in str(detail["steps"][0]["error"])
        assert any(line["kind"] == "status" for line in detail["timeline"])
        assert detail["waiting"] is None

        # The waiting one names its interrupt and the payload's JSON Schema.
        detail = (await c.get(f"/operator/api/executions/{ann.name}", headers=OPERATOR)).json()
        assert detail["waiting"]["kind"] == "interrupt"
        assert detail["waiting"]["step"] == "decide"
        assert detail["waiting"]["schema"]["properties"]["approved"]["type"] == "boolean"

        shape = (await c.get("/operator/api/flows/approval/shape", headers=OPERATOR)).json()
        assert [n["type"] for n in shape["nodes"]] == ["interrupt"]
        flows = (await c.get("/operator/api/flows", headers=OPERATOR)).json()
        assert {f["name"] for f in flows["flows"]} == {"approval", "pinged", "breaks", "naps"}


async def test_actions_across_owners() -> None:
    FLAKY["fail"] = True
    async with serve(auth=token_auth({TOKEN: "ops"})) as setup:
        c, engine = setup.client, setup.engine
        ann = await engine.schedule(approval, 7, owner=owner_key("ann"))
        bob = await engine.schedule(breaks, owner=owner_key("bob"))
        carl = await engine.schedule(pinged, owner=owner_key("carl"))
        dan = await engine.schedule(naps, owner=owner_key("dan"))
        await settled(engine, ann.name, "waiting")
        await settled(engine, bob.name, "failed")
        await settled(engine, carl.name, "waiting")
        await settled(engine, dan.name, "sleeping")

        bad = await c.post(
            f"/operator/api/executions/{ann.name}/resume",
            json={"step": "decide", "payload": {"approved": "perhaps"}},
            headers=OPERATOR,
        )
        assert bad.status_code == 400 and bad.json()["error"]["status"] == "INVALID_ARGUMENT"
        resumed = await c.post(
            f"/operator/api/executions/{ann.name}/resume",
            json={"step": "decide", "payload": {"approved": True}},
            headers=OPERATOR,
        )
        assert resumed.status_code == 200
        done = await settled(engine, ann.name, "completed")
        assert done["result"]["response"] == {"amount": 7, "approved": True}

        detail = (await c.get(f"/operator/api/executions/{carl.name}", headers=OPERATOR)).json()
        assert detail["waiting"]["kind"] == "signal"
        [known] = detail["waiting"]["signals"]
        assert known["signal"] == "ping"
        assert known["schema"]["properties"]["count"]["type"] == "integer"
        sent = await c.post(
            f"/operator/api/executions/{carl.name}/signals/ping",
            json={"payload": {"count": 3}},
            headers=OPERATOR,
        )
        assert sent.status_code == 200
        assert (await settled(engine, carl.name, "completed"))["result"]["response"] == 3

        not_failed = await c.post(f"/operator/api/executions/{ann.name}/recover", headers=OPERATOR)
        assert not_failed.status_code == 400
        assert not_failed.json()["error"]["status"] == "FAILED_PRECONDITION"
        FLAKY["fail"] = False
        recovered = await c.post(f"/operator/api/executions/{bob.name}/recover", headers=OPERATOR)
        assert recovered.status_code == 200
        assert (await settled(engine, bob.name, "completed"))["result"]["response"] == "fixed"

        woken = await c.post(f"/operator/api/executions/{dan.name}/wake", headers=OPERATOR)
        assert woken.status_code == 200
        cancelled = await c.post(f"/operator/api/executions/{dan.name}/cancel", headers=OPERATOR)
        assert cancelled.status_code == 200
        assert (await settled(engine, dan.name, "cancelled"))["status"] == "cancelled"

        missing = await c.post("/operator/api/executions/no-such-id/cancel", headers=OPERATOR)
        assert missing.status_code == 404
        malformed = await c.get("/operator/api/executions/bad%20id", headers=OPERATOR)
        assert malformed.status_code == 400


async def test_schedules_list_pause_and_resume_across_owners() -> None:
    async with serve(auth=token_auth({TOKEN: "ops"})) as setup:
        c, engine = setup.client, setup.engine
        await engine.ensure_schedule(naps, id="ann-nightly", cron="0 3 * * *", owner="a")
        await engine.ensure_schedule(naps, id="bob-hourly", interval=3600, owner="b")
        listed = (await c.get("/operator/api/schedules", headers=OPERATOR)).json()["schedules"]
        assert [(s["id"], s["owner"]) for s in listed] == [
            ("ann-nightly", "a"),
            ("bob-hourly", "b"),
        ]
        paused = await c.post("/operator/api/schedules/bob-hourly/pause", headers=OPERATOR)
        assert paused.json()["paused"] is True
        assert (await engine.get_schedule("bob-hourly")).paused
        resumed = await c.post("/operator/api/schedules/bob-hourly/resume", headers=OPERATOR)
        assert resumed.json()["paused"] is False
        missing = await c.post("/operator/api/schedules/nope/pause", headers=OPERATOR)
        assert missing.status_code == 404


async def test_streams_of_every_owner_are_listed_and_filtered() -> None:
    async with serve(auth=token_auth({TOKEN: "ops"})) as setup:
        c, manager = setup.client, setup.streams
        ann = await manager.open(flow="chat", owner=owner_key("ann"))
        bob = await manager.open(flow="agent", owner=owner_key("bob"))
        await bob.write({"step": 1})
        await bob.done("ok")
        listed = (await c.get("/operator/api/streams", headers=OPERATOR)).json()
        rows = {s["id"]: s for s in listed["streams"]}
        assert set(rows) == {ann.stream_id, bob.stream_id}
        assert rows[ann.stream_id]["owner"] == owner_key("ann")
        assert rows[ann.stream_id]["status"] == "open"
        assert rows[bob.stream_id]["status"] == "done" and rows[bob.stream_id]["length"] == 1

        async def ids(query: str) -> list[str]:
            response = await c.get(f"/operator/api/streams?{query}", headers=OPERATOR)
            assert response.status_code == 200, response.text
            return [s["id"] for s in response.json()["streams"]]

        assert await ids("principal=bob") == [bob.stream_id]
        assert await ids(f"owner={owner_key('ann')}") == [ann.stream_id]
        assert await ids("status=open") == [ann.stream_id]
        assert await ids("flow=agent") == [bob.stream_id]
        first = (await c.get("/operator/api/streams?limit=1", headers=OPERATOR)).json()
        assert len(first["streams"]) == 1 and first["nextCursor"]
        rest = await ids(f"limit=1&cursor={first['nextCursor']}")
        assert len(rest) == 1 and rest[0] != first["streams"][0]["id"]
        bad = await c.get("/operator/api/streams?status=sideways", headers=OPERATOR)
        assert bad.status_code == 400
        both = await c.get("/operator/api/streams?owner=x&principal=y", headers=OPERATOR)
        assert both.status_code == 400
        await ann.cancelled()


async def test_stream_info_tail_cancel_and_stop() -> None:
    async with serve(auth=token_auth({TOKEN: "ops"})) as setup:
        c, manager = setup.client, setup.streams
        writer = await manager.open(flow="chat", owner=owner_key("ann"))
        await writer.write("Hel")
        await writer.flush()
        info = (await c.get(f"/operator/api/streams/{writer.stream_id}", headers=OPERATOR)).json()
        assert info["status"] == "open" and info["length"] == 1
        assert info["owner"] == owner_key("ann") and info["flow"] == "chat"

        frames: list[str] = []

        async def tail() -> None:
            response = await c.get(
                f"/operator/api/streams/{writer.stream_id}/tail?offset=0", headers=OPERATOR
            )
            frames.append(response.text)

        async with anyio.create_task_group() as tg:
            tg.start_soon(tail)
            await writer.write("lo")
            await writer.done("Hello")
        assert frames == [
            'id: 0\nevent: chunk\ndata: "Hel"\n\n'
            'id: 1\nevent: chunk\ndata: "lo"\n\n'
            'event: result\ndata: "Hello"\n\n'
        ]
        from_one = await c.get(
            f"/operator/api/streams/{writer.stream_id}/tail?offset=1", headers=OPERATOR
        )
        assert from_one.text.startswith('id: 1\nevent: chunk\ndata: "lo"')
        finished = await c.post(
            f"/operator/api/streams/{writer.stream_id}/cancel", headers=OPERATOR
        )
        assert finished.json() == {"id": writer.stream_id, "requested": False}

        running = await manager.open(flow="chat", owner=owner_key("bob"))
        stop = await c.post(f"/operator/api/streams/{running.stream_id}/stop", headers=OPERATOR)
        assert stop.json()["requested"] is True and running.stop_requested
        cancel = await c.post(f"/operator/api/streams/{running.stream_id}/cancel", headers=OPERATOR)
        assert cancel.json()["requested"] is True and running.cancel_requested
        await running.cancelled()

        unknown = await c.get("/operator/api/streams/" + "x" * 22 + "/tail", headers=OPERATOR)
        assert unknown.status_code == 404
        bad_offset = await c.get(
            f"/operator/api/streams/{writer.stream_id}/tail?offset=-1", headers=OPERATOR
        )
        assert bad_offset.status_code == 400


async def test_actions_are_logged_with_the_operator(caplog: pytest.LogCaptureFixture) -> None:
    async with serve(auth=token_auth({TOKEN: "ops-alice"})) as setup:
        op = await setup.engine.schedule(naps)
        await settled(setup.engine, op.name, "sleeping")
        with caplog.at_level(logging.INFO, "stream_gateway.operator"):
            await setup.client.post(f"/operator/api/executions/{op.name}/cancel", headers=OPERATOR)
    assert any("ops-alice" in r.getMessage() and op.name in r.getMessage() for r in caplog.records)
