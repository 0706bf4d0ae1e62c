"""Starts with a client-chosen stream id: the id is the stream's, a repeat joins the
same run, and an id this start cannot have is refused without saying why."""

from __future__ import annotations

import time
import uuid
from contextlib import AsyncExitStack
from typing import Any

import anyio
import httpx
import pytest

from stream_gateway import Gateway
from stream_gateway.streams import StreamManager
from tests.backends import BackendHarness
from tests.gateway.conftest import serve
from tests.gateway.test_idempotency import STREAM, Runs, gateways

pytestmark = pytest.mark.anyio
TAKEN = "this stream id cannot be used for this start; choose a new one (a random UUID, say)"


def chosen(stream_id: str, **headers: str) -> dict[str, str]:
    return {**STREAM, "x-stream-id": stream_id, **headers}


async def test_concurrent_identical_starts_make_one_run_under_the_chosen_id(
    harness: BackendHarness,
) -> None:
    runs = Runs()
    stream_id = str(uuid.uuid4())
    async with gateways(harness, runs, count=2, max_running_flows_per_principal=1) as clients:
        bodies: list[tuple[str, str]] = []
        alice = chosen(stream_id, authorization="Bearer alice")

        async def start(i: int) -> None:
            http = clients[i % 2]
            async with http.stream("POST", "/answer", json={"data": "q"}, headers=alice) as r:
                assert r.status_code == 200, await r.aread()
                bodies.append((r.headers["x-genkit-stream-id"], (await r.aread()).decode()))

        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(start, i)
            with anyio.fail_after(10):
                while not runs.inputs:  # noqa: ASYNC110 - the flow has no event to offer
                    await anyio.sleep(0.01)
            # The client knows its stream without any answer: it can follow it already.
            async with clients[1].stream(
                "GET", f"/answer/streams/{stream_id}", headers={"authorization": "Bearer alice"}
            ) as sse:
                assert sse.status_code == 200
                lines = sse.aiter_lines()
                assert await anext(lines) == "id: 0"
                runs.release.set()
    assert runs.inputs == ["q"]
    assert {sid for sid, _ in bodies} == {stream_id}
    expected = 'data: {"message":"working"}\n\ndata: {"result":{"answer":"q"}}\n\n'
    assert [text for _, text in bodies] == [expected] * 20


async def test_the_id_may_come_in_the_body(harness: BackendHarness) -> None:
    runs = Runs()
    runs.release.set()
    stream_id = "my-own-stream-id-0001"
    async with gateways(harness, runs) as (http,):
        body = {"data": 2, "streamId": stream_id}
        first = await http.post("/answer", json=body, headers=STREAM)
        again = await http.post("/answer", json=body, headers=STREAM)
    assert first.headers["x-genkit-stream-id"] == again.headers["x-genkit-stream-id"] == stream_id
    assert first.text == again.text
    assert runs.inputs == [2]


async def test_an_id_this_start_cannot_have_gets_one_answer_whatever_the_reason(
    harness: BackendHarness,
) -> None:
    runs = Runs()
    runs.release.set()
    alices, bobs = str(uuid.uuid4()), str(uuid.uuid4())
    alice, bob = "Bearer alice", "Bearer bob"
    async with gateways(harness, runs) as (http,):
        ok = await http.post(
            "/answer", json={"data": "a"}, headers=chosen(alices, authorization=alice)
        )
        assert ok.status_code == 200
        # Alice, another body under her id; Bob, Alice's id; anyone, an id that was
        # never created by a start (a random one of a plain start).
        other_body = await http.post(
            "/answer", json={"data": "b"}, headers=chosen(alices, authorization=alice)
        )
        bobs_try = await http.post(
            "/answer", json={"data": "a"}, headers=chosen(alices, authorization=bob)
        )
        plain = await http.post(
            "/answer", json={"data": "p"}, headers={**STREAM, "authorization": alice}
        )
        plain_id = plain.headers["x-genkit-stream-id"]
        over_plain = await http.post(
            "/answer", json={"data": "p"}, headers=chosen(plain_id, authorization=alice)
        )
        # Bob's own id is his, and Alice cannot read his stream.
        bobs_own = await http.post(
            "/answer", json={"data": "b"}, headers=chosen(bobs, authorization=bob)
        )
        peek = await http.get(f"/answer/streams/{bobs}", headers={"authorization": alice})
        unknown = await http.get(
            f"/answer/streams/{uuid.uuid4()}", headers={"authorization": alice}
        )
    refusals = [other_body, bobs_try, over_plain]
    assert [r.status_code for r in refusals] == [409] * 3
    assert {r.text for r in refusals} == {
        '{"error":{"status":"ALREADY_EXISTS","message":"' + TAKEN + '"}}'
    }  # no details, no stream id: nothing tells the reasons apart
    assert bobs_own.status_code == 200 and bobs_own.headers["x-genkit-stream-id"] == bobs
    assert (peek.status_code, peek.text) == (unknown.status_code, unknown.text)
    assert sorted(runs.inputs) == ["a", "b", "p"]


async def test_an_expired_chosen_id_is_refused(harness: BackendHarness) -> None:
    runs = Runs()
    runs.release.set()
    stream_id = str(uuid.uuid4())
    now = [time.time()]
    async with AsyncExitStack() as stack:
        manager = StreamManager(harness.new_storage(), ttl=5, clock=lambda: now[0])
        url = await stack.enter_async_context(serve(Gateway([runs.flow()], stream_manager=manager)))
        http = await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=30))
        first = await http.post("/answer", json={"data": 1}, headers=chosen(stream_id))
        assert first.status_code == 200
        now[0] += 3600  # expired, not yet purged
        again = await http.post("/answer", json={"data": 1}, headers=chosen(stream_id))
    assert again.status_code == 409
    assert again.json()["error"]["message"] == TAKEN
    assert runs.inputs == [1]


@pytest.mark.parametrize(
    ("stream_id", "says"),
    [
        ("short", "malformed stream id"),
        ("x" * 129, "malformed stream id"),
        ("has spaces in it, sadly", "malformed stream id"),
        ("__reserved-by-firestore__", "malformed stream id"),
        ("i" + "A" * 43, "kept for the gateway's own"),
        ("c" + "b" * 43, "kept for the gateway's own"),
    ],
)
async def test_malformed_ids_are_refused(
    harness: BackendHarness, stream_id: str, says: str
) -> None:
    runs = Runs()
    async with gateways(harness, runs) as (http,):
        in_header = await http.post("/answer", json={"data": 1}, headers=chosen(stream_id))
        in_body = await http.post(
            "/answer", json={"data": 1, "streamId": stream_id}, headers=STREAM
        )
    for response in (in_header, in_body):
        assert response.status_code == 400
        assert says in response.json()["error"]["message"]
        assert stream_id not in response.text
    assert runs.inputs == []


@pytest.mark.parametrize(
    ("body", "headers", "says"),
    [
        ({"data": 1, "streamId": 12345}, STREAM, "malformed stream id"),
        (
            {"data": 1},
            {**chosen("a-chosen-stream-id-01"), "idempotency-key": str(uuid.uuid4())},
            "either an Idempotency-Key or a chosen stream id",
        ),
        (
            {"data": 1, "conversation": "chat-1"},
            chosen("a-chosen-stream-id-01"),
            "a conversation's turns have stream ids of their own",
        ),
        (
            {"data": 1},
            {"content-type": "application/json", "x-stream-id": "a-chosen-stream-id-01"},
            "needs a streaming request",
        ),
    ],
)
async def test_a_chosen_id_where_it_cannot_apply_is_refused(
    harness: BackendHarness, body: dict[str, Any], headers: dict[str, str], says: str
) -> None:
    runs = Runs()
    async with gateways(harness, runs) as (http,):
        response = await http.post("/answer", json=body, headers=headers)
    assert response.status_code == 400
    assert says in response.json()["error"]["message"]
    assert runs.inputs == []


async def test_without_a_stream_manager_a_chosen_id_is_refused() -> None:
    runs = Runs()
    async with serve(Gateway([runs.flow()])) as url, httpx.AsyncClient(base_url=url) as http:
        response = await http.post(
            "/answer", json={"data": 1}, headers=chosen("a-chosen-stream-id-01")
        )
    assert response.status_code == 400
    assert "needs a stream manager" in response.json()["error"]["message"]
    assert runs.inputs == []
