"""Helpers shared by the plugin's tests: a site (URL and key prefix), collecting events,
and a stream writer in another OS process."""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from stream_gateway.streams import ChunkEvent, StreamEvent, StreamManager
from stream_gateway_redis import RedisStreamManager

WRITER_SCRIPT = Path(__file__).with_name("redis_writer_proc.py")


@dataclass
class Site:
    """A Redis URL and a key prefix: what a test's managers share."""

    url: str
    prefix: str

    def manager(self, **options: Any) -> RedisStreamManager:
        return RedisStreamManager(self.url, prefix=self.prefix, **options)


def new_prefix() -> str:
    return f"sg-redis-{secrets.token_hex(5)}"


def new_stream_id() -> str:
    return "t" + secrets.token_hex(12)


async def collect(
    manager: StreamManager, stream_id: str, from_offset: int = 0, within: float = 60
) -> list[StreamEvent]:
    with anyio.fail_after(within):
        return [e async for e in manager.subscribe(stream_id, from_offset)]


def chunks_of(events: list[StreamEvent]) -> list[tuple[int, Any]]:
    return [(e.offset, e.data) for e in events if isinstance(e, ChunkEvent)]


class Child:
    """A `redis_writer_proc.py` process: stdout read by lines, stderr kept in a file."""

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

    async def flushed_at_least(self, n: int) -> int:
        """Read ``flushed <length>`` lines until the length reaches ``n``; return it."""
        flushed = 0
        while flushed < n:
            line = await self.line()
            assert line.startswith("flushed "), line
            flushed = int(line.split()[1])
        return flushed

    def stderr(self) -> str:
        return self.stderr_path.read_text()


@asynccontextmanager
async def writer_process(
    tmp_path: Path, site: Site, stream_id: str, *args: str
) -> AsyncIterator[Child]:
    """Run the writer script in its own process; killed (if still running) on exit."""
    stderr_path = tmp_path / f"writer-{stream_id}.err"
    command = [sys.executable, str(WRITER_SCRIPT), *args, "--", site.url, site.prefix, stream_id]
    with stderr_path.open("wb") as stderr:
        process = await anyio.open_process(command, stdout=subprocess.PIPE, stderr=stderr)
    try:
        yield Child(process, stderr_path)
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.wait()
            await process.aclose()
