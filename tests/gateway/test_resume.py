"""SSE endpoint, exact resume at random drop points, detached runs, cancel, drain."""

from __future__ import annotations

import random
from typing import Any

import anyio
import pytest

from stream_gateway._json import loads
from tests.backends import BackendHarness
from tests.gateway.conftest import Live, StartLive

pytestmark = pytest.mark.anyio

STREAM = {"accept": "text/event-stream", "content-type": "application/json"}


async def start(live: Live, flow: str, data: Any, **headers: str) -> str:
    """Start a streaming run and disconnect at once; returns the stream id."""
    async with live.http.stream(
        "POST", live.flow(flow), json={"data": data}, headers={**STREAM, **headers}
    ) as response:
        assert response.status_code == 200
        return response.headers["x-genkit-stream-id"]


def parse_sse(text: str) -> list[dict[str, str]]:
    events = []
    for block in text.split("\n\n"):
        if not block:
            continue
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            name, _, value = line.partition(": ")
            fields[name] = value
        events.append(fields)
    return events


async def test_sse_replays_with_ids_and_resumes_after_last_event_id(live: Live) -> None:
    stream_id = await start(live, "count", {"n": 4})
    url = live.flow("count") + f"/streams/{stream_id}"
    async with live.http.stream("GET", url) as response:
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        body = (await response.aread()).decode()
    assert body == (
        'id: 0\nevent: chunk\ndata: {"i":0}\n\n'
        'id: 1\nevent: chunk\ndata: {"i":1}\n\n'
        'id: 2\nevent: chunk\ndata: {"i":2}\n\n'
        'id: 3\nevent: chunk\ndata: {"i":3}\n\n'
        'event: result\ndata: {"total":4}\n\n'
    )
    after = await live.http.get(url, headers={"last-event-id": "1"})
    assert [e.get("id") for e in parse_sse(after.text)] == ["2", "3", None]
    from_query = await live.http.get(url + "?offset=3")
    assert [e.get("id") for e in parse_sse(from_query.text)] == ["3", None]
    for bad in ["?offset=x", "?offset=-2", "?offset=5"]:
        assert (await live.http.get(url + bad)).status_code == 400
    assert (await live.http.get(url, headers={"last-event-id": "abc"})).status_code == 400
    unknown = await live.http.get(live.flow("count") + "/streams/" + "D" * 22)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["status"] == "NOT_FOUND"
    malformed = await live.http.get(live.flow("count") + "/streams/bad.id")
    assert malformed.status_code == 400


async def test_sse_sends_keep_alives_while_waiting(start_live: StartLive) -> None:
    async with start_live(keep_alive=0.1) as live:
        stream_id = await start(live, "count", {"n": 2, "delay": 0.5})
        url = live.flow("count") + f"/streams/{stream_id}"
        response = await live.http.get(url)
    assert ": keep-alive\n\n" in response.text
    events = [e for e in parse_sse(response.text) if "" not in e]  # drop comments
    assert [e.get("event") for e in events] == ["chunk", "chunk", "result"]


async def read_some_sse(
    live: Live, url: str, headers: dict[str, str], limit: int
) -> list[dict[str, str]]:
    """Read up to ``limit`` events, then drop the connection."""
    events: list[dict[str, str]] = []
    async with live.http.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200
        buffer = ""
        async for text in response.aiter_text():
            buffer += text
            *blocks, buffer = buffer.split("\n\n")
            for block in blocks:
                if block.startswith(":"):
                    continue
                events.extend(parse_sse(block + "\n\n"))
                if len(events) >= limit or events[-1].get("event") != "chunk":
                    return events
    return events


async def test_exact_resume_over_sse_at_200_random_points(live: Live) -> None:
    n = 3000
    stream_id = await start(live, "count", {"n": n, "delay": 0.0005})
    url = live.flow("count") + f"/streams/{stream_id}"
    rng = random.Random(2024)
    received: list[int] = []
    last_id: str | None = None
    drops = 0
    with anyio.fail_after(120):
        while True:
            headers = {} if last_id is None else {"last-event-id": last_id}
            limit = rng.randrange(1, n // 250) if drops < 200 else 10**9
            events = await read_some_sse(live, url, headers, limit)
            for event in events:
                if event.get("event") == "chunk":
                    assert int(event["id"]) == len(received)
                    received.append(loads(event["data"])["i"])
                    last_id = event["id"]
            if events and events[-1].get("event") == "result":
                assert loads(events[-1]["data"]) == {"total": n}
                break
            drops += 1
    assert drops >= 200
    assert received == list(range(n))


async def test_exact_resume_over_genkit_endpoint_with_offsets(live: Live) -> None:
    n = 2000
    stream_id = await start(live, "count", {"n": n, "delay": 0.0005})
    rng = random.Random(99)
    received: list[int] = []
    drops = 0
    with anyio.fail_after(120):
        while True:
            headers = {
                **STREAM,
                "x-genkit-stream-id": stream_id,
                "x-genkit-stream-offset": str(len(received)),
            }
            limit = rng.randrange(1, n // 250) if drops < 200 else 10**9
            finished = False
            async with live.http.stream("POST", live.flow("count"), headers=headers) as response:
                buffer = b""
                taken = 0
                async for data in response.aiter_bytes():
                    buffer += data
                    *frames, buffer = buffer.split(b"\n\n")
                    for frame in frames:
                        body = loads(frame[6:])
                        if "result" in body:
                            assert body["result"] == {"total": n}
                            finished = True
                            break
                        received.append(body["message"]["i"])
                        taken += 1
                        if taken >= limit:
                            break
                    if finished or taken >= limit:
                        break
            if finished:
                break
            drops += 1
    assert drops >= 200
    assert received == list(range(n))


async def test_client_disconnect_does_not_stop_the_flow(live: Live) -> None:
    stream_id = await start(live, "count", {"n": 30, "delay": 0.01})
    assert live.manager is not None
    info = await live.manager.info(stream_id)
    assert info.status == "open"
    with anyio.fail_after(10):
        while (await live.manager.info(stream_id)).status == "open":  # noqa: ASYNC110
            await anyio.sleep(0.05)
    reconnect = await live.http.post(
        live.flow("count"), headers={**STREAM, "x-genkit-stream-id": stream_id}
    )
    body = reconnect.content
    assert body.count(b'"message"') == 30
    assert body.endswith(b'data: {"result":{"total":30}}\n\n')


async def test_cancel_stops_flow_and_every_subscriber_sees_cancelled(live: Live) -> None:
    stream_id = await start(live, "count", {"n": 100_000, "delay": 0.01})
    url = live.flow("count") + f"/streams/{stream_id}"
    seen: list[str] = []

    async def follow() -> None:
        response = await live.http.get(url)
        seen.append(response.text)

    with anyio.fail_after(15):
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(follow)
            await anyio.sleep(0.3)
            cancel = await live.http.delete(url)
            assert cancel.json() == {"streamId": stream_id, "cancelled": True}
    for text in seen:
        last = parse_sse(text)[-1]
        assert last["event"] == "error"
        assert loads(last["data"]) == {"status": "CANCELLED", "message": "flow cancelled"}
    assert live.manager is not None
    info = await live.manager.info(stream_id)
    assert info.status == "cancelled"
    assert info.length < 100_000
    again = await live.http.delete(url)
    assert again.json()["cancelled"] is False


async def test_shutdown_drains_then_ends_streams_clearly(
    start_live: StartLive, harness: BackendHarness
) -> None:
    async with start_live() as live:
        short = await start(live, "count", {"n": 5, "delay": 0.05})
        endless = await start(live, "count", {"n": 100_000, "delay": 0.05})
    # The lifespan ended: running flows had drain_grace (2 s) to finish. Look with a
    # fresh storage on the same data, as the next process would.
    storage = harness.new_storage()
    await storage.start()
    try:
        short_record = await storage.load(short)
        endless_record = await storage.load(endless)
    finally:
        await storage.close()
    assert short_record is not None and short_record.status == "done"
    assert endless_record is not None and endless_record.status == "error"
    assert endless_record.terminal is not None
    assert loads(endless_record.terminal.payload) == {
        "status": "UNAVAILABLE",
        "message": "server shut down before the flow finished",
    }


async def test_offsets_past_the_end_of_a_live_stream_are_400(live: Live) -> None:
    """A client only ever sees committed chunks, so an offset beyond the committed
    length is a miscount: refused at once, as for a finished stream, on both protocols."""
    assert live.manager is not None
    stream_id = await start(live, "count", {"n": 100_000, "delay": 0.01})
    url = live.flow("count") + f"/streams/{stream_id}"
    with anyio.fail_after(10):
        while (await live.manager.info(stream_id)).length < 3:  # noqa: ASYNC110
            await anyio.sleep(0.01)
    length = (await live.manager.info(stream_id)).length
    past = str(length + 1_000_000)
    reconnect = {**STREAM, "x-genkit-stream-id": stream_id}
    try:
        with anyio.fail_after(10):
            for request in [
                live.http.build_request(
                    "POST",
                    live.flow("count"),
                    headers={**reconnect, "x-genkit-stream-offset": past},
                ),
                live.http.build_request("GET", url + f"?offset={past}"),
                live.http.build_request("GET", url, headers={"last-event-id": past}),
            ]:
                response = await live.http.send(request, stream=True)
                await response.aread()
                assert response.status_code == 400, request
                error = response.json()["error"]
                assert error["status"] == "INVALID_ARGUMENT"
                assert "past the end" in error["message"]
            # Resuming right after the last chunk seen (here: the committed length,
            # as another worker's client would) is fine, live.
            resumed = {**reconnect, "x-genkit-stream-offset": str(length)}
            async with live.http.stream("POST", live.flow("count"), headers=resumed) as r:
                assert r.status_code == 200
                first = ""
                async for text in r.aiter_text():
                    first += text
                    if "\n\n" in first:
                        break
            assert first.startswith(f'data: {{"message":{{"i":{length}}}}}')
    finally:
        await live.http.delete(url)


async def test_head_on_a_live_sse_stream_answers_headers_at_once(live: Live) -> None:
    stream_id = await start(live, "count", {"n": 100_000, "delay": 0.01})
    url = live.flow("count") + f"/streams/{stream_id}"
    try:
        with anyio.fail_after(10):  # the stream runs for ~1000 s: no waiting for its end
            head = await live.http.head(url)
            assert head.status_code == 200
            assert head.headers["content-type"] == "text/event-stream; charset=utf-8"
            assert head.content == b""
            unknown = await live.http.head(live.flow("count") + "/streams/" + "D" * 22)
            assert unknown.status_code == 404
    finally:
        await live.http.delete(url)
