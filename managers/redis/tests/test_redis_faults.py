"""Failure paths: an unreachable or full server, foreign data, misuse, a missing binary."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import anyio
import pytest
from redis.asyncio import Redis

from stream_gateway import (
    InternalError,
    ResourceExhaustedError,
    StreamExistsError,
    StreamNotFoundError,
    UnavailableError,
)
from stream_gateway.streams import ErrorEvent, StreamEvent, StreamRecord
from stream_gateway_redis import RedisStreamManager, RedisStreamStorage
from stream_gateway_redis._layout import log_key, meta_key
from stream_gateway_redis.testing import RedisServer, RedisServerError

from redis_support import Site, chunks_of, collect, new_stream_id

pytestmark = pytest.mark.anyio


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_an_unreachable_server_is_unavailable_after_the_retry_window() -> None:
    url = f"redis://127.0.0.1:{closed_port()}/0"
    async with RedisStreamManager(url, write_retry_for=0.3) as manager:
        with pytest.raises(UnavailableError, match="Redis unavailable"):
            await manager.open()
        with pytest.raises(UnavailableError):
            await manager.info("unknown-stream-id-00001")


async def test_a_server_out_of_memory_is_resource_exhausted(
    private_server: RedisServer,
) -> None:
    client = Redis.from_url(private_server.url)
    try:
        async with RedisStreamManager(private_server.url) as manager:
            storage, sid = manager.storage, new_stream_id()
            await storage.create(StreamRecord(sid, "f", 1.0, 1.0, 2e9, lease_until=2e9))
            used = int((await client.info("memory"))["used_memory"])
            await client.config_set("maxmemory", used + 200_000)
            big = b'"' + b"x" * 50_000 + b'"'
            written = 0
            with pytest.raises(ResourceExhaustedError, match="out of memory"):
                for i in range(100):
                    await storage.append(sid, i, [big])
                    written += 1
            # Nothing half-written: the log holds exactly the appends that succeeded.
            record = await storage.load(sid)
            assert record is not None and record.length == written > 0
            assert len(await storage.read(sid, 0, 1000)) == written
    finally:
        await client.aclose()


async def test_a_create_retried_after_a_lost_reply_succeeds_once(site: Site) -> None:
    async with site.manager() as manager:
        storage = manager.storage
        sid = new_stream_id()
        record = StreamRecord(sid, "flow", 1.0, 1.0, 2e9, lease_until=2e9)
        await storage.create(record)
        await storage.create(record)  # the same record again: our own earlier attempt
        other = StreamRecord(sid, "flow", 5.0, 5.0, 2e9, lease_until=2e9)
        with pytest.raises(StreamExistsError):
            await storage.create(other)
        with pytest.raises(StreamNotFoundError):
            await storage.append(new_stream_id(), 0, [b"1"])


async def test_foreign_data_under_the_prefix_is_an_internal_error(site: Site) -> None:
    client = Redis.from_url(site.url)
    try:
        async with site.manager() as manager:
            sid = new_stream_id()
            await client.set(meta_key(site.prefix, sid), "not a hash")
            with pytest.raises(InternalError, match="Redis refused a command"):
                await manager.info(sid)
            await client.delete(meta_key(site.prefix, sid))
            await client.hset(meta_key(site.prefix, sid), mapping={"status": "weird"})
            with pytest.raises(InternalError, match="malformed record"):
                await manager.info(sid)
    finally:
        await client.aclose()


async def test_a_given_client_speaking_resp3_works_and_stays_open(site: Site) -> None:
    client = Redis.from_url(site.url, protocol=3)
    try:
        async with (
            site.manager() as writing,
            RedisStreamManager(client=client, prefix=site.prefix) as reading,
        ):
            writer = await writing.open()
            received = []

            async def follow() -> None:
                received.extend(await collect(reading, writer.stream_id))

            async with anyio.create_task_group() as tg:
                tg.start_soon(follow)
                for i in range(30):
                    await writer.write(i)
                    await anyio.sleep(0.002)
                await writer.done(None)
            assert chunks_of(received) == [(i, i) for i in range(30)]
        assert await client.ping()  # not closed by the manager
    finally:
        await client.aclose()


async def test_misuse_fails_with_a_message_naming_the_fix() -> None:
    with pytest.raises(ValueError, match="either a Redis URL or a client"):
        RedisStreamStorage()
    with pytest.raises(ValueError, match="either a Redis URL or a client"):
        RedisStreamStorage("redis://x", client=Redis())
    with pytest.raises(ValueError, match="invalid key prefix"):
        RedisStreamStorage("redis://x", prefix="{bad}")
    storage = RedisStreamStorage("redis://127.0.0.1:1/0")
    with pytest.raises(RuntimeError, match="not started"):
        await storage.load("unknown-stream-id-00001")
    with pytest.raises(RuntimeError, match="not started"):
        await storage.append("unknown-stream-id-00001", 0, [b"1"])
    await storage.start()
    with pytest.raises(RuntimeError, match="may be called once"):
        await storage.start()
    await storage.close()
    with pytest.raises(RuntimeError, match="closed"):
        await storage.load("unknown-stream-id-00001")


def test_a_missing_redis_server_binary_fails_loudly(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("REDIS_SERVER", str(tmp_path / "no-such-redis-server"))
    with pytest.raises(RedisServerError, match="redis-server not found"):
        RedisServer(directory=tmp_path).start()


def test_a_server_that_will_not_start_shows_its_log(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server = RedisServer(directory=tmp_path, appendfsync="sometimes")  # not a valid setting
    with pytest.raises(RedisServerError, match="did not start"):
        server.start(timeout=10)


async def test_flushes_lost_by_redis_stop_the_writer_instead_of_leaving_a_hole(
    site: Site,
) -> None:
    client = Redis.from_url(site.url)
    try:
        async with site.manager(lease=2.0) as writing, site.manager() as reading:
            writer = await writing.open()
            for i in range(3):
                await writer.write(i)
                await writer.flush()
            # What a crash with `appendfsync everysec` can do: the last acknowledged
            # batch is gone when Redis comes back.
            sid = writer.stream_id
            await client.xdel(log_key(site.prefix, sid), "2-1")
            await client.hset(meta_key(site.prefix, sid), "length", "2")
            await writer.write(3)
            with pytest.raises(InternalError, match="append at 3 past the end 2"):
                await writer.flush()
            with pytest.raises(InternalError, match="finish after 3 chunks, the log holds 2"):
                await writer.done("never")
            events = await collect(reading, sid)
    finally:
        await client.aclose()
    assert chunks_of(events) == [(0, 0), (1, 1)]
    assert events[-1] == ErrorEvent("UNAVAILABLE", "stream abandoned")


async def test_a_quiet_stream_keeps_its_blocking_read_within_the_socket_timeout(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="stream_gateway.streams")
    # A socket timeout shorter than `block`: redis-py's default is 5 s, `block` 10 s.
    url = f"{site.url}?socket_timeout=2"
    async with site.manager() as writing, RedisStreamManager(url, prefix=site.prefix) as reading:
        writer = await writing.open()
        received: list[StreamEvent] = []

        async def follow() -> None:
            received.extend(await collect(reading, writer.stream_id))

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            await anyio.sleep(4.5)  # quiet for more than two socket timeouts
            await writer.write("late")
            await writer.done(None)
    assert chunks_of(received) == [(0, "late")]
    failures = [r.getMessage() for r in caplog.records if "listener" in r.getMessage()]
    assert failures == []
