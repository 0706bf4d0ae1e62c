"""Across OS processes: a writer in a subprocess, followed live from this one."""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from stream_gateway.streams import ErrorEvent, ResultEvent, StreamEvent
from stream_gateway_rtdb import RtdbStreamManager

from rtdb_support import Site, chunks_of, collect

pytestmark = pytest.mark.anyio

WRITER_SCRIPT = Path(__file__).with_name("rtdb_writer_proc.py")


class Child:
    """A `rtdb_writer_proc.py` process: stdout read by lines, stderr kept in a file."""

    def __init__(self, process: Process, stderr_path: Path) -> None:
        self.process = process
        self.stderr_path = stderr_path
        assert process.stdout is not None
        self._stdout = BufferedByteReceiveStream(process.stdout)

    async def line(self) -> str:
        try:
            with anyio.fail_after(30):
                return (await self._stdout.receive_until(b"\n", 1 << 16)).decode()
        except (anyio.EndOfStream, anyio.IncompleteRead, TimeoutError) as exc:
            raise AssertionError(
                f"the writer stopped talking; its stderr:\n{self.stderr()}"
            ) from exc

    def stderr(self) -> str:
        return self.stderr_path.read_text()


@asynccontextmanager
async def writer_process(tmp_path: Path, *args: str) -> AsyncIterator[Child]:
    stderr_path = tmp_path / "writer.err"
    with stderr_path.open("wb") as stderr:
        process = await anyio.open_process(
            [sys.executable, str(WRITER_SCRIPT), *args],
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


async def test_a_stream_written_by_another_process_is_followed_live(
    site: Site, tmp_path: Path
) -> None:
    sid = secrets.token_urlsafe(16)
    async with (
        writer_process(tmp_path, "--chunks=60", "--pause=0.01", "--", site.url, sid) as child,
        RtdbStreamManager(site.url) as manager,
    ):
        assert await child.line() == "opened", child.stderr()
        assert (await child.line()).startswith("flushed")
        events = await collect(manager, sid)  # joins mid-stream, follows to the end
        assert await child.process.wait() == 0, child.stderr()
    assert chunks_of(events) == [(i, {"i": i}) for i in range(60)]
    assert events[-1] == ResultEvent(b'{"n":60}')


async def test_a_killed_writer_leaves_an_abandoned_stream_with_every_flushed_chunk(
    site: Site, tmp_path: Path
) -> None:
    sid = secrets.token_urlsafe(16)
    args = ("--chunks=0", "--pause=0.01", "--lease=1", "--", site.url, sid)  # ids may start "-"
    async with writer_process(tmp_path, *args) as child, RtdbStreamManager(site.url) as manager:
        assert await child.line() == "opened", child.stderr()
        received: list[StreamEvent] = []

        async def follow() -> None:
            received.extend(await collect(manager, sid))

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            flushed = 0
            while flushed < 40:
                flushed = int((await child.line()).split()[1])
            child.process.send_signal(signal.SIGKILL)
            assert await child.process.wait() == -signal.SIGKILL
    assert received[-1] == ErrorEvent("UNAVAILABLE", "stream abandoned")
    chunks = chunks_of(received)
    assert len(chunks) >= flushed
    assert chunks == [(i, {"i": i}) for i in range(len(chunks))]
    async with RtdbStreamManager(site.url) as later:
        again = await collect(later, sid)
    assert chunks_of(again) == chunks
