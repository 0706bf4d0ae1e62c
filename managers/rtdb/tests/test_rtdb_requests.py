"""What reaches the database: coalesced writes, targeted reads, the layout, TTL, ids."""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx
import pytest

from stream_gateway import InvalidArgumentError, StreamNotFoundError
from stream_gateway.streams import ResultEvent, Terminal
from stream_gateway_rtdb import RtdbStreamManager, RtdbStreamStorage

from rtdb_support import RequestLog, Site, chunks_of, collect

pytestmark = pytest.mark.anyio


async def test_writes_are_coalesced_and_the_meta_is_not_rewritten_per_flush(
    private_site: Site,
) -> None:
    """200 chunks/s from one writer: at most ~10 batch writes a second, plus renewals."""
    log, server = RequestLog(), private_site.server
    async with (
        log.client() as http,
        RtdbStreamManager(private_site.url, http=http, lease=1.5) as manager,
    ):
        writer = await manager.open(flow="chat")
        sid = writer.stream_id
        before = await server.stats()
        start = anyio.current_time()
        for i in range(400):
            await writer.write({"i": i})
            await anyio.sleep_until(start + (i + 1) / 200)
        await writer.flush()
        elapsed = anyio.current_time() - start
        after = await server.stats()
        # Renewals refreshed the stored length (never ahead of the committed chunks).
        assert 0 < (await private_site.dump(f"streams/meta/{sid}"))["length"] <= 400
        await writer.done({"n": 400})

    window = sum(after["requests"][m] - before["requests"][m] for m in ("PUT", "PATCH"))
    renewals = log.writes().count(("PATCH", "/streams/meta.json"))
    assert renewals >= 2  # every lease / 3 = 0.5 s
    assert window - renewals <= 10 * elapsed + 1, (window, renewals, elapsed)
    # The meta: one PUT at create, multi-path PATCHes to renew, one conditional PUT
    # (ETag) at finish, which leaves an end recorded elsewhere (abandoned) alone.
    meta_writes = log.writes("/meta")
    assert meta_writes[0] == ("PUT", f"/streams/meta/{sid}.json")
    assert meta_writes[-1] == ("PUT", f"/streams/meta/{sid}.json")
    assert set(meta_writes[1:-1]) == {("PATCH", "/streams/meta.json")}
    batch_writes = log.writes("/batches")
    assert all(method == "PUT" for method, _ in batch_writes)
    assert len(log.writes()) == len(meta_writes) + len(batch_writes)


async def test_layout_keeps_meta_and_padded_batches_apart(site: Site) -> None:
    async with RtdbStreamManager(site.url) as manager:
        writer = await manager.open(flow="f", owner="owner-hash")
        for i in range(5):
            await writer.write(["chunk", i, None, {}])
            await writer.flush()
        await writer.done([])
    meta = await site.dump(f"streams/meta/{writer.stream_id}")
    assert meta["status"] == "done" and meta["length"] == 5 and "lease_until" not in meta
    assert meta["flow"] == "f" and meta["owner"] == "owner-hash"
    assert meta["terminal"] == {"kind": "done", "payload": "[]"}
    batches = await site.dump(f"streams/batches/{writer.stream_id}")
    assert sorted(batches) == [f"{i:012d}" for i in range(5)]
    assert batches["000000000003"] == {"o": 3, "n": 1, "c": ['["chunk",3,null,{}]']}


async def _write_stream(url: str, chunks: int, per_batch: int) -> str:
    async with RtdbStreamManager(url, flush_interval=60) as manager:
        writer = await manager.open()
        for i in range(chunks):
            await writer.write(i)
            if (i + 1) % per_batch == 0:
                await writer.flush()
        await writer.done("end")
        return writer.stream_id


class BatchSpy(RequestLog):
    """Also records the batch keys that batch queries returned."""

    def __init__(self) -> None:
        super().__init__()
        self.returned: list[str] = []

    async def on_response(self, response: httpx.Response) -> None:
        request = response.request
        if "/batches/" in request.url.path and "text/event-stream" not in str(
            request.headers.get("accept")
        ):
            await response.aread()
            self.returned.extend(json.loads(response.content) or {})

    def client(self) -> httpx.AsyncClient:
        hooks: dict[str, Any] = {"request": [self.hook], "response": [self.on_response]}
        return httpx.AsyncClient(event_hooks=hooks)


@pytest.mark.parametrize("offset", [900, 905])
async def test_resume_reads_only_the_batches_at_or_after_the_offset(
    site: Site, offset: int
) -> None:
    sid = await _write_stream(site.url, 1000, per_batch=10)
    spy = BatchSpy()
    async with spy.client() as http, RtdbStreamManager(site.url, http=http) as manager:
        events = await collect(manager, sid, offset)
    assert chunks_of(events) == [(i, i) for i in range(offset, 1000)]
    assert events[-1] == ResultEvent(b'"end"')
    assert spy.returned and min(spy.returned) == "000000000900"
    assert len(set(spy.returned)) == 10  # batches 900, 910, ..., 990 and no other
    queries = [p for m, path, p in spy.entries if m == "GET" and "/batches/" in path]
    assert all(p.get("orderBy") == '"$key"' for p in queries)


async def test_ids_are_checked_before_they_become_paths(private_site: Site) -> None:
    storage = RtdbStreamStorage(private_site.url)
    await storage.start()
    before = (await private_site.server.stats())["requests"]
    try:
        for bad in ["a/b-000000000000000", "dots.are.bad.in.keys", "../../../up", "x$y", ""]:
            with pytest.raises(InvalidArgumentError):
                await storage.load(bad)
            with pytest.raises(InvalidArgumentError):
                await storage.read(bad, 0, 10)
            with pytest.raises(InvalidArgumentError):
                await storage.append(bad, 0, [b"1"])
            with pytest.raises(InvalidArgumentError):
                await storage.finish(bad, 0, Terminal("done", b"1"), now=0, expires_at=1)
            with pytest.raises(InvalidArgumentError):
                await storage.request_cancel(bad)
            with pytest.raises(InvalidArgumentError):
                storage.watch(bad)
        async with RtdbStreamManager(private_site.url) as manager:
            with pytest.raises(InvalidArgumentError):
                await manager.info("has/slash/in-it-0000")
            with pytest.raises(InvalidArgumentError):
                await manager.open("dots.are.bad.in.keys")
    finally:
        await storage.close()
    assert (await private_site.server.stats())["requests"] == before


async def test_finished_streams_expire_and_purge_removes_meta_and_batches(site: Site) -> None:
    async with RtdbStreamManager(site.url, ttl=0.5) as manager:
        finished = await manager.open()
        for i in range(3):
            await finished.write(i)
        await finished.done(None)
        still_open = await manager.open()
        await still_open.write("kept")
        await still_open.flush()
        assert await site.dump(f"streams/batches/{finished.stream_id}")
        await anyio.sleep(0.7)
        with pytest.raises(StreamNotFoundError):
            await manager.info(finished.stream_id)
        assert await manager.purge() == 1
        assert await site.dump(f"streams/meta/{finished.stream_id}") is None
        assert await site.dump(f"streams/batches/{finished.stream_id}") is None
        assert (await manager.info(still_open.stream_id)).length == 1
        await still_open.done(None)
