"""Across OS processes: live follow, cancel, and a writer killed mid-stream.

The writer is `writer_proc.py` in a process of its own on the same schema; this test
process follows, cancels and checks what the database holds afterwards.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from stream_gateway.streams import ChunkEvent, ErrorEvent, ResultEvent, StreamEvent
from stream_gateway_postgres import PostgresStreamManager, PostgresStreamStorage
from stream_gateway_postgres.testing import PostgresServer

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

WRITER_SCRIPT = Path(__file__).with_name("writer_proc.py")
_serial = itertools.count()


class Child:
    """A `writer_proc.py` process: stdout read by lines, stderr kept in a file."""

    def __init__(self, process: Process, stderr_path: Path) -> None:
        self.process = process
        self.stderr_path = stderr_path
        assert process.stdout is not None
        self._stdout = BufferedByteReceiveStream(process.stdout)

    async def line(self) -> str:
        return (await self._stdout.receive_until(b"\n", 1 << 16)).decode()

    async def rest(self) -> list[str]:
        """Every line up to the end of stdout."""
        lines = []
        with contextlib.suppress(anyio.EndOfStream, anyio.IncompleteRead):
            while True:
                lines.append(await self.line())
        return lines

    async def send(self, line: str) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send(line.encode() + b"\n")

    def stderr(self) -> str:
        return self.stderr_path.read_text()


@asynccontextmanager
async def writer_process(
    tmp_path: Path, server: PostgresServer, schema: str, *args: str
) -> AsyncIterator[Child]:
    stderr_path = tmp_path / f"writer-{next(_serial)}.stderr"
    with stderr_path.open("wb") as stderr:
        process = await anyio.open_process(
            [sys.executable, str(WRITER_SCRIPT), server.dsn, schema, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    try:
        yield Child(process, stderr_path)
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.wait()
            await process.aclose()


def chunks_of(events: list[StreamEvent]) -> list[tuple[int, Any]]:
    return [(e.offset, e.data) for e in events if isinstance(e, ChunkEvent)]


async def test_stream_written_by_another_process_is_followed_live(
    tmp_path: Path, server: PostgresServer, schema: str
) -> None:
    sid = "followed-live-stream-01"
    received: list[StreamEvent] = []
    # The writer creates the schema: start it first, so both never race to.
    async with writer_process(
        tmp_path, server, schema, sid, "--chunks=20", "--wait-after=10", "--pause=0.01",
        "--no-report",
    ) as child:  # fmt: skip
        with anyio.fail_after(30):
            assert await child.line() == "opened"
        async with PostgresStreamManager(server.dsn, schema=schema) as manager:
            with anyio.fail_after(30):
                async with aclosing(manager.subscribe(sid)) as events:
                    async for event in events:
                        received.append(event)
                        if isinstance(event, ChunkEvent) and event.offset == 9:
                            # The writer waits for this line: chunks 0-9 came in live.
                            await child.send("go")
                assert await child.line() == "done"
                assert await child.process.wait() == 0, child.stderr()
            assert manager.storage.listen_connections == 1

    assert chunks_of(received) == [(i, {"i": i}) for i in range(20)]
    assert received[-1] == ResultEvent(b'{"n":20}')
    assert len(received) == 21


async def test_many_streams_followed_over_one_listen_connection(
    tmp_path: Path, server: PostgresServer, schema: str
) -> None:
    sids = [f"many-followed-stream-{n:02}" for n in range(6)]
    results: dict[str, list[StreamEvent]] = {}
    async with contextlib.AsyncExitStack() as stack:
        children = []
        for sid in sids:
            child = await stack.enter_async_context(
                writer_process(
                    tmp_path, server, schema, sid, "--chunks=30", "--wait-after=5",
                    "--pause=0.005", "--no-report",
                )
            )  # fmt: skip
            with anyio.fail_after(30):
                assert await child.line() == "opened"
            children.append(child)
        async with PostgresStreamManager(server.dsn, schema=schema) as manager:

            async def follow(sid: str, child: Child) -> None:
                events: list[StreamEvent] = []
                async with aclosing(manager.subscribe(sid)) as stream:
                    async for event in stream:
                        events.append(event)
                        if isinstance(event, ChunkEvent) and event.offset == 4:
                            await child.send("go")
                results[sid] = events

            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    for sid, child in zip(sids, children, strict=True):
                        tg.start_soon(follow, sid, child)
            assert manager.storage.listen_connections == 1
        for child in children:
            assert await child.process.wait() == 0, child.stderr()

    for sid in sids:
        assert chunks_of(results[sid]) == [(i, {"i": i}) for i in range(30)]
        assert results[sid][-1] == ResultEvent(b'{"n":30}')


async def test_cancel_from_this_process_stops_the_writer_in_another(
    tmp_path: Path, server: PostgresServer, schema: str
) -> None:
    sid = "cancelled-elsewhere-stream-01"
    async with writer_process(
        tmp_path, server, schema, sid, "--chunks=0", "--until-cancelled", "--pause=0.01",
        "--lease=0.6",
    ) as child:  # fmt: skip
        with anyio.fail_after(30):
            assert await child.line() == "opened"
            while int((await child.line()).removeprefix("flushed ")) < 5:
                pass
        async with PostgresStreamManager(server.dsn, schema=schema) as manager:
            assert await manager.cancel(sid) is True
            with anyio.fail_after(30):  # heard at the writer's next renewal (0.2 s)
                lines = await child.rest()
                assert lines[-1] == "cancelled", lines
                assert await child.process.wait() == 0, child.stderr()
                events = [e async for e in manager.subscribe(sid)]
            assert events[-1] == ErrorEvent("CANCELLED", "stopped by request")
            followed = chunks_of(events)
            assert followed == [(i, {"i": i}) for i in range(len(followed))]
            assert len(followed) >= 5
            info = await manager.info(sid)
            assert (info.status, info.length) == ("cancelled", len(followed))
            assert await manager.cancel(sid) is False  # finished: nothing to cancel


async def test_killed_writer_is_abandoned_and_its_flushed_chunks_survive(
    tmp_path: Path, server: PostgresServer, schema: str
) -> None:
    sid = "killed-writer-stream-01"
    received: list[StreamEvent] = []
    flushed = 0
    async with writer_process(
        tmp_path, server, schema, sid, "--chunks=0", "--pause=0.005", "--lease=1"
    ) as child:
        with anyio.fail_after(30):
            assert await child.line() == "opened"
        async with PostgresStreamManager(server.dsn, schema=schema) as manager:

            async def follow() -> None:
                async with aclosing(manager.subscribe(sid)) as events:
                    async for event in events:
                        received.append(event)

            async with anyio.create_task_group() as tg:
                tg.start_soon(follow)
                with anyio.fail_after(30):
                    while flushed < 40 or not received:
                        flushed = int((await child.line()).removeprefix("flushed "))
                child.process.send_signal(signal.SIGKILL)
                with anyio.fail_after(20):  # the subscriber must end by itself
                    for line in await child.rest():
                        flushed = int(line.removeprefix("flushed "))
                    assert await child.process.wait() == -signal.SIGKILL

    assert received[-1] == ErrorEvent("UNAVAILABLE", "stream abandoned")
    followed = chunks_of(received)
    assert followed == [(i, {"i": i}) for i in range(len(followed))]
    assert len(followed) >= flushed

    # A storage started afresh (another process, later) finds every flushed chunk and
    # the abandonment recorded at the committed length: the end the follower saw.
    storage = PostgresStreamStorage(server.dsn, schema=schema)
    await storage.start()
    try:
        stored = await storage.load(sid)
        assert stored is not None and stored.status == "error"
        assert stored.terminal is not None and b"stream abandoned" in stored.terminal.payload
        assert stored.length == len(followed) and stored.length >= flushed
        chunks = await storage.read(sid, 0, 1_000_000)
        assert [json.loads(c) for c in chunks] == [{"i": i} for i in range(stored.length)]
    finally:
        await storage.close()
