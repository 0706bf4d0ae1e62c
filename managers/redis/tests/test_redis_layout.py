"""Where a stream lives in Redis: its keys, their slot, entry ids, expiry."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from stream_gateway import InternalError, InvalidArgumentError
from stream_gateway.streams import ErrorEvent, StreamEvent, Terminal
from stream_gateway_redis._layout import check_prefix, created_key, expiry_key, log_key, meta_key
from stream_gateway_redis.testing import RedisServer

from redis_support import Site, chunks_of, collect, new_stream_id

pytestmark = pytest.mark.anyio


def test_the_keys_of_a_stream_share_one_hash_slot() -> None:
    for i in range(200):
        sid = f"stream-{i:04d}-{'x' * (i % 50)}"
        meta, log = meta_key("sg", sid), log_key("sg", sid)
        assert meta == f"sg:{{{sid}}}:meta" and log == f"sg:{{{sid}}}:log"
        assert key_slot(meta.encode()) == key_slot(log.encode()) == key_slot(sid.encode())
    # Different streams spread over the slots (the tag is the id, not the prefix).
    slots = {key_slot(meta_key("sg", f"stream-{i:08d}").encode()) for i in range(200)}
    assert len(slots) > 150


def test_ids_and_prefixes_that_would_move_the_hash_tag_are_refused() -> None:
    for bad in ("a}b-cdefghijklmnop", "{abcdefghijklmnop}", "with space in it00"):
        with pytest.raises(InvalidArgumentError):
            meta_key("sg", bad)
    for prefix in ("a{b", "x}", "", "has space", "p" * 65):
        with pytest.raises(ValueError, match="invalid key prefix"):
            check_prefix(prefix)
    assert check_prefix("app:chat.streams_1") == "app:chat.streams_1"


async def test_batches_are_entries_keyed_by_offset_and_the_terminal_ends_the_log(
    site: Site,
) -> None:
    client = Redis.from_url(site.url)
    try:
        async with site.manager(ttl=600, lease=30, flush_interval=60) as manager:
            writer = await manager.open(new_stream_id(), flow="chat", owner="o-hash")
            sid = writer.stream_id
            for i in range(3):
                await writer.write(i)
            await writer.flush()
            await writer.write("three")
            await writer.write({"four": 4})
            await writer.flush()
            meta = await client.hgetall(meta_key(site.prefix, sid))
            assert meta[b"status"] == b"open" and meta[b"length"] == b"5"
            assert meta[b"flow"] == b"chat" and meta[b"owner"] == b"o-hash"
            await writer.done({"ok": True})
            entries = await client.xrange(log_key(site.prefix, sid))
            assert entries == [
                (b"0-3", {b"d": b"0\n1\n2"}),
                (b"3-2", {b"d": b'"three"\n{"four":4}'}),
                (b"5-1", {b"t": b"done"}),
            ]
            meta = await client.hgetall(meta_key(site.prefix, sid))
            assert meta[b"status"] == b"done" and meta[b"tpayload"] == b'{"ok":true}'
            assert b"lease_until" not in meta
            # Both keys expire with the record: Redis's own TTL is the stream's.
            record = await manager.info(sid)
            for key in (meta_key(site.prefix, sid), log_key(site.prefix, sid)):
                expire_at = await client.pexpiretime(key) / 1000
                assert abs(expire_at - record.expires_at) < 0.01
            index = await client.zscore(expiry_key(site.prefix), sid)
            assert index == pytest.approx(record.expires_at)
            created = await client.zscore(created_key(site.prefix), sid)
            assert created == pytest.approx(record.created_at)
            keys = sorted([k async for k in client.scan_iter(match=f"{site.prefix}:*")])
            assert keys == sorted(
                [
                    meta_key(site.prefix, sid).encode(),
                    log_key(site.prefix, sid).encode(),
                    expiry_key(site.prefix).encode(),
                    created_key(site.prefix).encode(),
                ]
            )
    finally:
        await client.aclose()


async def test_a_retried_append_adds_only_what_is_missing(site: Site) -> None:
    client = Redis.from_url(site.url)
    try:
        async with site.manager() as manager:
            writer = await manager.open(new_stream_id())
            storage, sid = manager.storage, writer.stream_id
            await storage.append(sid, 0, [b"0", b"1"])
            await storage.append(sid, 0, [b"0", b"1"])  # the reply was lost: same again
            await storage.append(sid, 0, [b"0", b"1", b"2", b"3"])  # with newer chunks
            await storage.append(sid, 4, [b"4"])
            entries = await client.xrange(log_key(site.prefix, sid)) or []
            ids = [entry_id for entry_id, _ in entries]
            assert ids == [b"0-2", b"2-2", b"4-1"]
            assert await storage.read(sid, 0, 100) == [b"0", b"1", b"2", b"3", b"4"]
            # Reads start inside a batch and stop at the limit, across batches.
            assert await storage.read(sid, 1, 2) == [b"1", b"2"]
            assert await storage.read(sid, 3, 100) == [b"3", b"4"]
            assert await storage.read(sid, 5, 100) == []
            with pytest.raises(InternalError, match="past the end"):
                await storage.append(sid, 9, [b"9"])  # a gap is never written
            with pytest.raises(InternalError, match="the log holds 5"):
                await storage.finish(sid, 3, Terminal("done", b"1"), now=1.0, expires_at=2.0)
            await storage.finish(sid, 5, Terminal("done", b"1"), now=1.0, expires_at=2e9)
            # A finish retried after its reply was lost changes nothing.
            await storage.finish(sid, 5, Terminal("done", b"2"), now=1.0, expires_at=2e9)
            record = await storage.load(sid)
            assert record is not None and record.terminal == Terminal("done", b"1")
            assert record.length == 5
            await writer.cancelled()  # the manager's writer: already finished underneath
    finally:
        await client.aclose()


async def test_finished_streams_are_expired_by_redis_itself(site: Site) -> None:
    client = Redis.from_url(site.url)
    try:
        async with site.manager(ttl=0.2, purge_interval=3600) as manager:
            writer = await manager.open(new_stream_id())
            await writer.write("x")
            await writer.done(1)
            sid = writer.stream_id
            assert chunks_of(await collect(manager, sid)) == [(0, "x")]
            deadline = time.monotonic() + 10
            while await client.exists(meta_key(site.prefix, sid), log_key(site.prefix, sid)):
                assert time.monotonic() < deadline, "Redis did not expire the stream's keys"
                await anyio.sleep(0.05)
            assert await manager.storage.load(sid) is None
            # purge() finds it gone and drops it from the index, counting it once.
            assert await manager.purge() == 1
            assert await manager.purge() == 0
            assert await client.zscore(expiry_key(site.prefix), sid) is None
    finally:
        await client.aclose()


async def test_purge_leaves_a_stream_whose_lease_was_renewed(site: Site) -> None:
    async with site.manager() as manager:
        writer = await manager.open(new_stream_id())
        storage = manager.storage
        now = time.time()
        # The index says expired, the record (renewed meanwhile) says otherwise.
        await storage.client.zadd(expiry_key(site.prefix), {writer.stream_id: now - 100})
        assert await storage.purge(now) == 0
        assert (await manager.info(writer.stream_id)).status == "open"
        await writer.done(None)


async def test_many_followers_in_one_process_share_one_blocking_read_and_their_loads(
    private_server: RedisServer,
) -> None:
    site = Site(private_server.url, "shared")
    client = Redis.from_url(site.url)
    followers, batches = 50, 20
    try:
        async with site.manager() as writing, site.manager() as reading:
            writer = await writing.open()
            await writer.write(-1)
            await writer.flush()
            await client.config_resetstat()
            results: list[list[StreamEvent]] = []

            async def follow() -> None:
                results.append(await collect(reading, writer.stream_id))

            async with anyio.create_task_group() as tg:
                for _ in range(followers):
                    tg.start_soon(follow)
                await anyio.sleep(0.2)
                for i in range(batches):
                    await writer.write(i)
                    await writer.flush()
                    await anyio.sleep(0.02)
                await writer.done(None)
            stats = {
                k.removeprefix("cmdstat_"): v["calls"]
                for k, v in (await client.info("commandstats")).items()
            }
    finally:
        await client.aclose()
    assert all(chunks_of(r) == [(0, -1)] + [(i + 1, i) for i in range(batches)] for r in results)
    changes = batches + 1  # the batches and the terminal entry
    # Without sharing: one HGETALL per follower per change (1,050 here).
    assert stats["hgetall"] <= 4 * changes + followers, stats
    assert stats["xread"] <= 2 * changes + 4, stats  # one blocking read for them all


async def test_every_command_of_a_stream_s_life_stays_in_one_cluster_slot(
    tmp_path: Path,
) -> None:
    # A one-node Redis Cluster owning every slot: it still refuses any command or
    # script whose keys span two slots (CROSSSLOT), which is what this checks.
    directory = tmp_path / "cluster"
    directory.mkdir()
    server = RedisServer(
        directory=directory,
        config=["cluster-enabled yes", f"cluster-config-file {directory}/nodes.conf"],
    )
    server.start()
    client = Redis.from_url(server.url)
    try:
        await client.cluster("ADDSLOTSRANGE", 0, 16383)
        with anyio.fail_after(30):
            while True:  # Redis offers no event for its cluster state: poll it
                info = await client.cluster("INFO")  # parsed by redis-py into a dict
                if info.get("cluster_state") in ("ok", b"ok"):
                    break
                await anyio.sleep(0.05)
        site = Site(server.url, "sg")
        async with site.manager(lease=0.6, ttl=0.3) as a, site.manager() as b:
            writer = await a.open()
            received: list[StreamEvent] = []

            async def follow() -> None:
                received.extend(await collect(b, writer.stream_id))

            async with anyio.create_task_group() as tg:
                tg.start_soon(follow)
                for i in range(20):
                    await writer.write(i)
                    await writer.flush()
                await anyio.sleep(0.5)  # lease renewals run meanwhile
                assert await b.cancel(writer.stream_id) is True
                with anyio.fail_after(10):
                    await writer.wait_cancel_requested()
                await writer.cancelled()
            assert chunks_of(received) == [(i, i) for i in range(20)]
            assert received[-1] == ErrorEvent("CANCELLED", "flow cancelled")
            entries = [b"#c 0 " + b'"0..19"']
            assert await a.storage.compact(writer.stream_id, 20, entries) is True
            assert await b.storage.read(writer.stream_id, 0, 20) == entries
            other = await a.open()
            await other.done(None)
            await anyio.sleep(0.5)
            assert await a.purge() == 2
    finally:
        await client.aclose()
        server.cleanup()
