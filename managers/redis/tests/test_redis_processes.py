"""Across OS processes: a writer in a subprocess, followed and cancelled from this one."""

from __future__ import annotations

import signal
from pathlib import Path

import anyio
import pytest

from stream_gateway.streams import ErrorEvent, ResultEvent, StreamEvent
from stream_gateway_redis import RedisStreamManager

from redis_support import Site, chunks_of, collect, new_stream_id, writer_process

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def test_a_stream_written_by_another_process_is_followed_live(
    site: Site, tmp_path: Path
) -> None:
    sid = new_stream_id()
    args = ("--chunks=80", "--pause=0.01")
    async with writer_process(tmp_path, site, sid, *args) as child, site.manager() as manager:
        assert await child.line() == "opened", child.stderr()
        await child.flushed_at_least(1)
        events = await collect(manager, sid)  # joins mid-stream, follows to the end
        assert await child.process.wait() == 0, child.stderr()
    assert chunks_of(events) == [(i, {"i": i}) for i in range(80)]
    assert events[-1] == ResultEvent(b'{"n":80}')


async def test_followers_in_two_processes_see_the_same_stream(site: Site, tmp_path: Path) -> None:
    sid = new_stream_id()
    args = ("--chunks=40", "--pause=0.01")
    async with (
        writer_process(tmp_path, site, sid, *args) as child,
        site.manager() as one,
        site.manager() as two,
    ):
        assert await child.line() == "opened", child.stderr()
        results: dict[str, list[StreamEvent]] = {}

        async def follow(name: str, manager: RedisStreamManager, start: int) -> None:
            results[name] = await collect(manager, sid, start)

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow, "one", one, 0)
            await child.flushed_at_least(5)
            tg.start_soon(follow, "two", two, 3)
    assert chunks_of(results["one"]) == [(i, {"i": i}) for i in range(40)]
    assert chunks_of(results["two"]) == [(i, {"i": i}) for i in range(3, 40)]


async def test_cancel_from_this_process_stops_the_writer_in_another(
    site: Site, tmp_path: Path
) -> None:
    sid = new_stream_id()
    args = ("--chunks=0", "--pause=0.02", "--lease=3", "--until-cancelled")
    async with writer_process(tmp_path, site, sid, *args) as child, site.manager() as manager:
        assert await child.line() == "opened", child.stderr()
        received: list[StreamEvent] = []

        async def follow() -> None:
            received.extend(await collect(manager, sid))

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            await child.flushed_at_least(5)
            assert await manager.cancel(sid) is True
            # The writer hears it at its next lease renewal (a third of its lease).
            while (line := await child.line()) != "cancelled":
                assert line.startswith("flushed "), line
            assert await child.process.wait() == 0, child.stderr()
        assert (await manager.info(sid)).status == "cancelled"
        assert await manager.cancel(sid) is False
    assert received[-1] == ErrorEvent("CANCELLED", "stopped by request")
    chunks = chunks_of(received)
    assert chunks == [(i, {"i": i}) for i in range(len(chunks))] and len(chunks) >= 5


async def test_a_killed_writer_leaves_an_abandoned_stream_with_every_flushed_chunk(
    site: Site, tmp_path: Path
) -> None:
    sid = new_stream_id()
    args = ("--chunks=0", "--pause=0.01", "--lease=2")
    async with writer_process(tmp_path, site, sid, *args) as child, site.manager() as manager:
        assert await child.line() == "opened", child.stderr()
        received: list[StreamEvent] = []

        async def follow() -> None:
            received.extend(await collect(manager, sid))

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            flushed = await child.flushed_at_least(40)
            child.process.send_signal(signal.SIGKILL)
            assert await child.process.wait() == -signal.SIGKILL
    assert received[-1] == ErrorEvent("UNAVAILABLE", "stream abandoned")
    chunks = chunks_of(received)
    assert len(chunks) >= flushed
    assert chunks == [(i, {"i": i}) for i in range(len(chunks))]
    async with site.manager() as later:  # a reconnect after the fact sees the same
        again = await collect(later, sid)
    assert chunks_of(again) == chunks
    assert again[-1] == ErrorEvent("UNAVAILABLE", "stream abandoned")
