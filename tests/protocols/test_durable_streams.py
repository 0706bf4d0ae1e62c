"""DurableStreamsApp beyond the conformance suite: flows' streams, owners, expiry.

The protocol itself is checked by `@durable-streams/server-conformance-tests` (see
tests/conformance); these tests cover what is ours.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import anyio
import httpx
import pytest

from stream_gateway import InMemoryStreamManager, SqliteStreamManager, StreamManager
from stream_gateway.protocols import DurableStreamsApp
from stream_gateway.protocols.durable_streams.reads import StreamView
from stream_gateway.protocols.durable_streams.wire import (
    ProtocolError,
    format_offset,
    parse_offset,
)
from stream_gateway.streams import InMemoryStreamStorage, StreamRecord
from tests.gateway.conftest import serve
from tests.servers.protocols_app import build_app

pytestmark = pytest.mark.anyio

ALICE = {"Authorization": "Bearer alice"}
BOB = {"Authorization": "Bearer bob"}


@pytest.fixture(params=["memory", "sqlite"])
def manager(request: pytest.FixtureRequest, tmp_path: Path) -> StreamManager:
    if request.param == "memory":
        return InMemoryStreamManager()
    return SqliteStreamManager(tmp_path / "streams.db")


@pytest.fixture
async def base(manager: StreamManager) -> AsyncIterator[str]:
    async with serve(build_app(manager, long_poll_timeout=5.0)) as url:
        yield url


async def run_flow(http: httpx.AsyncClient, base: str, name: str, data: object) -> str:
    """Run a flow to its end over the Genkit protocol; its stream id."""
    response = await http.post(
        f"{base}/flows/{name}",
        json={"data": data},
        headers={**ALICE, "Accept": "text/event-stream"},
    )
    assert response.status_code == 200
    return response.headers["x-genkit-stream-id"]


async def test_a_flows_stream_reads_as_a_closed_json_stream(base: str) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        stream_id = await run_flow(http, base, "count", {"n": 3})
        response = await http.get(f"{base}/ds/{stream_id}", params={"offset": "-1"}, headers=ALICE)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.json() == [
            {"message": {"i": 0}},
            {"message": {"i": 1}},
            {"message": {"i": 2}},
            {"result": {"total": 3}},
        ]
        assert response.headers["stream-closed"] == "true"
        assert response.headers["stream-next-offset"] == format_offset(4)
        # From an offset: the rest, then EOF at the tail.
        rest = await http.get(
            f"{base}/ds/{stream_id}", params={"offset": format_offset(2)}, headers=ALICE
        )
        assert rest.json() == [{"message": {"i": 2}}, {"result": {"total": 3}}]
        eof = await http.get(
            f"{base}/ds/{stream_id}", params={"offset": format_offset(4)}, headers=ALICE
        )
        assert eof.json() == [] and eof.headers["stream-closed"] == "true"
        head = await http.head(f"{base}/ds/{stream_id}", headers=ALICE)
        assert head.status_code == 200 and head.headers["stream-closed"] == "true"


async def test_a_failed_flow_ends_its_stream_with_an_error_message(base: str) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        stream_id = await run_flow(
            http, base, "fail", {"after": 1, "status": "NOT_FOUND", "message": "gone"}
        )
        response = await http.get(f"{base}/ds/{stream_id}", headers=ALICE)
        assert response.json() == [
            {"message": 0},
            {"error": {"status": "NOT_FOUND", "message": "gone", "details": {"after": 1}}},
        ]


async def test_a_live_flow_is_followed_by_long_poll(base: str) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        started = await http.post(
            f"{base}/flows/count",
            json={"data": {"n": 3, "delay": 0.2}},
            headers={**ALICE, "Accept": "text/event-stream"},
        )
        stream_id = started.headers["x-genkit-stream-id"]
        seen: list[object] = []
        offset = "-1"
        for _ in range(50):  # bounded: three chunks and a result take a few polls
            response = await http.get(
                f"{base}/ds/{stream_id}",
                params={"offset": offset, "live": "long-poll"},
                headers=ALICE,
            )
            assert response.status_code in (200, 204)
            if response.status_code == 200:
                seen += response.json()
            offset = response.headers["stream-next-offset"]
            if response.headers.get("stream-closed") == "true":
                break
        assert seen == [
            {"message": {"i": 0}},
            {"message": {"i": 1}},
            {"message": {"i": 2}},
            {"result": {"total": 3}},
        ]


async def test_a_flows_stream_is_its_owners_and_read_only(base: str) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        stream_id = await run_flow(http, base, "count", {"n": 1})
        url = f"{base}/ds/{stream_id}"
        assert (await http.get(url, headers=BOB)).status_code == 404
        assert (await http.get(url)).status_code == 404
        assert (await http.head(url, headers=BOB)).status_code == 404
        post = await http.post(
            url, content=b"[1]", headers={**ALICE, "Content-Type": "application/json"}
        )
        assert post.status_code == 405
        assert (await http.delete(url, headers=ALICE)).status_code == 405
        put = await http.put(url, headers={**ALICE, "Content-Type": "application/json"})
        assert put.status_code == 409


async def test_a_created_stream_belongs_to_its_principal(base: str) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        url = f"{base}/ds/notes/today"
        created = await http.put(
            url, content=b"hi", headers={**ALICE, "Content-Type": "text/plain"}
        )
        assert created.status_code == 201
        assert (await http.get(url, headers=ALICE)).text == "hi"
        assert (await http.get(url, headers=BOB)).status_code == 404
        append = await http.post(url, content=b"!", headers={**BOB, "Content-Type": "text/plain"})
        assert append.status_code == 404
        assert (await http.delete(url, headers=BOB)).status_code == 404


async def test_the_context_provider_guards_every_request(base: str) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        url = f"{base}/ds/anything"
        rejected = await http.put(url, headers={"Authorization": "Bearer invalid"})
        assert rejected.status_code == 401
        denied = await http.get(url, headers={"Authorization": "Bearer denied"})
        assert denied.status_code == 403
        assert rejected.headers["x-content-type-options"] == "nosniff"


async def test_reserved_and_malformed_paths_are_refused(base: str) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        assert (await http.put(f"{base}/ds/__ds/subscriptions/x")).status_code == 404
        assert (await http.put(f"{base}/ds/a/%2E%2E/b")).status_code == 404


def test_offsets_round_trip_and_sort() -> None:
    assert parse_offset(format_offset(12)) == 12
    assert parse_offset("-1") == 0 and parse_offset(None) == 0
    assert parse_offset("now") is None
    assert format_offset(9) < format_offset(10) < format_offset(100)
    for bad in ["", "12", "0000000000000000_12", "x" * 33, "1000000000000000_0000000000000001"]:
        with pytest.raises(ProtocolError):
            parse_offset(bad)


async def test_the_sweep_removes_expired_streams_and_ends_their_chunks() -> None:
    now = [1000.0]
    manager = InMemoryStreamManager(clock=lambda: now[0])
    app = DurableStreamsApp(manager, sweep_interval=0.01)
    async with serve(app) as url, httpx.AsyncClient(timeout=30) as http:
        response = await http.put(
            f"{url}/short", content=b"x", headers={"Content-Type": "text/plain", "Stream-TTL": "5"}
        )
        assert response.status_code == 201
        stream = app.catalog.peek("short")
        assert stream is not None
        now[0] += 6
        with anyio.fail_after(10):
            while len(app.catalog):  # noqa: ASYNC110 - the sweep has no event to wait on
                await anyio.sleep(0.01)
        assert stream.writer.closed
        record = await manager.info(stream.stream_id)
        assert record.status == "cancelled"


def test_removing_a_stream_twice_releases_its_source_once() -> None:
    from typing import cast

    from stream_gateway.protocols.durable_streams.catalog import Catalog, DsStream, Settings
    from stream_gateway.streams import StreamWriter

    catalog = Catalog()
    writer = cast(StreamWriter, object())  # the catalog never touches the writer
    source = DsStream("src", writer, Settings("text/plain"), None, 0.0)
    fork = DsStream("fork", writer, Settings("text/plain"), None, 0.0, source=source)
    catalog.add(source)
    catalog.add(fork)
    assert catalog.remove(source) == [] and source.soft_deleted  # a fork reads from it
    assert catalog.remove(fork) == [fork, source]  # the last fork releases the source
    assert catalog.remove(fork) == []
    assert source.forks == 0 and len(catalog) == 0


class _StallingStorage(InMemoryStreamStorage):
    """Appends wait until released: a create can be caught in the middle."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = anyio.Event()
        self.release = anyio.Event()
        self.created: list[str] = []

    async def create(self, record: StreamRecord) -> None:
        self.created.append(record.stream_id)
        await super().create(record)

    async def append(self, stream_id: str, offset: int, chunks: Sequence[bytes]) -> None:
        self.entered.set()
        await self.release.wait()
        await super().append(stream_id, offset, chunks)


async def test_a_create_cancelled_midway_still_ends_its_chunks() -> None:
    storage = _StallingStorage()
    manager = StreamManager(storage)
    app = DurableStreamsApp(manager)
    async with app.lifespan():
        request = httpx.Request(
            "PUT", "http://t/s", content=b"data", headers={"Content-Type": "text/plain"}
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(_put, app, request)
            await storage.entered.wait()
            tg.cancel_scope.cancel()  # say, the server shutting down
            storage.release.set()
        assert app.catalog.peek("s") is None
        [stream_id] = storage.created
        record = await manager.info(stream_id)
        assert record.status == "cancelled", "the chunks were left without their end"


async def _put(app: DurableStreamsApp, request: httpx.Request) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        await http.send(request)


async def test_a_compacted_flows_stream_reads_whole_and_refuses_inside_offsets(
    base: str, manager: StreamManager
) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        stream_id = await run_flow(http, base, "text", "abcdef")
        assert (await manager.compact(stream_id)).entries_after == 1
        url = f"{base}/ds/{stream_id}"
        whole = await http.get(url, params={"offset": "-1"}, headers=ALICE)
        assert whole.json() == [{"message": "abcdef"}, {"result": "abcdef"}]
        assert whole.headers["stream-next-offset"] == format_offset(7)
        assert whole.headers["stream-closed"] == "true"
        end = await http.get(url, params={"offset": format_offset(6)}, headers=ALICE)
        assert end.json() == [{"result": "abcdef"}]
        for live in (None, "long-poll", "sse"):
            params = {"offset": format_offset(3), **({"live": live} if live else {})}
            inside = await http.get(url, params=params, headers=ALICE)
            assert inside.status_code == 410
            assert "replay from offset 0" in inside.text
        sse = await http.get(url, params={"offset": "-1", "live": "sse"}, headers=ALICE)
        assert '[{"message":"abcdef"},{"result":"abcdef"}]' in sse.text


async def test_protocol_streams_are_never_compacted(base: str, manager: StreamManager) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        created = await http.put(
            f"{base}/ds/notes",
            content=b'["a","b","c"]',
            headers={**ALICE, "content-type": "application/json", "stream-closed": "true"},
        )
        assert created.status_code == 201
        page = await manager.list_streams()
        [record] = [r for r in page.records if r.flow != "text"]
        report = await manager.compact(record.stream_id)
        assert (report.compacted, report.reason) == (False, "its writer keeps it as written")
        read = await http.get(f"{base}/ds/notes", params={"offset": "-1"}, headers=ALICE)
        assert read.json() == ["a", "b", "c"]


async def _finished_flow_stream(manager: StreamManager, chunks: list[object]) -> str:
    writer = await manager.open(flow="f", owner="o")
    for chunk in chunks:
        await writer.write(chunk)
    await writer.done("r")
    return writer.stream_id


async def test_a_catch_up_read_overtaken_by_compaction_gives_the_compacted_stream() -> None:
    # A compaction landing between two batches of a catch-up read used to give the
    # stored entries as chunks (invalid JSON) and skip offsets.
    storage = InMemoryStreamStorage()
    async with StreamManager(storage, read_batch=4) as manager:
        parts: list[object] = [
            {"type": "text-delta", "id": "t", "delta": f"x{i}"} if i % 3 else {"n": i}
            for i in range(12)
        ]
        stream_id = await _finished_flow_stream(manager, parts)
        view = StreamView(manager, stream_id, "application/json", flow=True)
        expected = json.loads((await view.read(0)).body)
        read, calls = storage.read, 0

        async def compacting_read(sid: str, offset: int, limit: int) -> list[bytes]:
            nonlocal calls
            calls += 1
            if calls == 2:
                assert (await manager.compact(stream_id)).compacted
            return await read(sid, offset, limit)

        storage.read = compacting_read  # type: ignore[method-assign,assignment]
        page = await view.read(0)
    got = json.loads(page.body)  # valid JSON: no raw entry in it
    assert got[-1] == {"result": "r"} and page.next_offset == 13
    joined = [m["message"] for m in got[:-1]]
    assert joined != [m["message"] for m in expected[:-1]]  # the compacted form
    text = "".join(p["delta"] for p in joined if isinstance(p, dict) and "delta" in p)
    assert text == "".join(p["delta"] for p in parts if isinstance(p, dict) and "delta" in p)


async def test_a_read_at_the_end_of_a_compacted_stream_is_not_empty() -> None:
    # A long-poll client that had every chunk read the result of a compacted stream
    # as an empty page (204) and lost it.
    async with InMemoryStreamManager() as manager:
        stream_id = await _finished_flow_stream(manager, [f"t{i}" for i in range(5)])
        view = StreamView(manager, stream_id, "application/json", flow=True)
        before = await view.read(5)
        assert (await manager.compact(stream_id)).compacted
        after = await view.read(5)
    assert not before.empty and not after.empty
    assert json.loads(after.body) == json.loads(before.body) == [{"result": "r"}]
