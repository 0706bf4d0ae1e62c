"""A minimal HTTP/1.1 client on raw sockets, so the client is never the bottleneck."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["post_stream", "read_rss", "server", "sse_get"]


@contextmanager
def server(kind: str, stack: str = "asyncio+h11") -> Iterator[tuple[int, int]]:
    """Run ``bench._apps KIND`` on ``stack`` in a subprocess; yields (port, pid)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench._apps", kind],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "BENCH_STACK": stack},
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("listening"):
            raise RuntimeError(f"server {kind} failed to start: {line!r}")
        yield int(line.split()[1]), proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


def read_rss(pid: int) -> int:
    """Resident memory of a process, in bytes (Linux)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


async def _request(
    port: int, head: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**22)
    writer.write(head)
    await writer.drain()
    headers = await reader.readuntil(b"\r\n\r\n")
    return reader, writer, headers


async def _read_chunked(reader: asyncio.StreamReader, until: bytes) -> bytes:
    """Read a chunked body until its data contains ``until`` (or the body ends)."""
    parts: list[bytes] = []
    tail = b""
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.strip(), 16)
        if size == 0:
            break
        data = await reader.readexactly(size + 2)
        parts.append(data[:-2])
        tail = (tail + data[:-2])[-200:]
        if until in tail:
            break
    return b"".join(parts)


async def post_stream(
    port: int,
    path: str,
    data: object,
    headers: dict[str, str] | None = None,
    until: bytes = b'{"result"',
) -> tuple[bytes, bytes, float]:
    """POST a Genkit streaming request; returns (headers, body, seconds)."""
    body = json.dumps({"data": data}).encode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    head = (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: text/event-stream\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body
    start = time.perf_counter()
    reader, writer, response_headers = await _request(port, head)
    content = await _read_chunked(reader, until)
    elapsed = time.perf_counter() - start
    writer.close()
    return response_headers, content, elapsed


async def sse_get(port: int, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open an SSE GET; returns the reader positioned at the chunked body."""
    head = f"GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: text/event-stream\r\n\r\n".encode()
    reader, writer, _ = await _request(port, head)
    return reader, writer
