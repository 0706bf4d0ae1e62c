"""Gateway processes sharing one backend: follow, cancel and resume across processes.

Each gateway is a separate uvicorn server (`tests.servers.flows_app`) in its own OS
process, on the backend's shared data: a SQLite file, the Firestore emulator, the RTDB
stand-in, Redis, a PostgreSQL schema.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from stream_gateway._json import loads
from tests.backends import BACKENDS, BackendHarness

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]
STREAM = {"accept": "text/event-stream", "content-type": "application/json"}
SHARED = [
    n
    for n in os.environ.get(
        "GATEWAY_BACKENDS_SHARED", "sqlite,firestore,rtdb,redis,postgres"
    ).split(",")
    if n
]


@pytest.fixture(params=SHARED)
async def shared(request: pytest.FixtureRequest) -> AsyncIterator[BackendHarness]:
    async with BACKENDS[request.param]() as harness:  # type: ignore[attr-defined]
        yield harness


@contextmanager
def gateway(
    harness: BackendHarness, lease: float = 10.0
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """A gateway process on the harness's backend; yields its flows URL and process."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.servers.flows_app", "--port", "0",
         "--manager", harness.name, "--db", harness.location, "--lease", str(lease)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on" in line, f"gateway did not start: {line!r}"
        yield line.split()[-1] + "/flows", proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(15)
        if proc.stdout is not None:
            proc.stdout.close()


async def start(http: httpx.AsyncClient, url: str, n: int, delay: float) -> str:
    async with http.stream(
        "POST", url + "/count", json={"data": {"n": n, "delay": delay}}, headers=STREAM
    ) as r:
        assert r.status_code == 200
        return r.headers["x-genkit-stream-id"]


async def genkit_follow(
    http: httpx.AsyncClient, url: str, stream_id: str, stop_after: int | None = None
) -> list[Any]:
    """Frames of a Genkit reconnect, decoded: ("message", x) ... then the terminal."""
    frames: list[Any] = []
    headers = {**STREAM, "x-genkit-stream-id": stream_id}
    async with http.stream("POST", url + "/count", headers=headers) as response:
        assert response.status_code == 200, response.status_code
        buffer = b""
        async for data in response.aiter_bytes():
            buffer += data
            *done, buffer = buffer.split(b"\n\n")
            for frame in done:
                kind, _, body = frame.partition(b": ")
                frames.append(
                    ("message", loads(body)["message"])
                    if b'"message"' in body[:12]
                    else (kind.decode(), loads(body))
                )
                if stop_after is not None and len(frames) >= stop_after:
                    return frames
    return frames


async def sse_follow(http: httpx.AsyncClient, url: str, stream_id: str) -> list[tuple[str, Any]]:
    events: list[tuple[str, Any]] = []
    async with http.stream("GET", f"{url}/count/streams/{stream_id}") as response:
        assert response.status_code == 200
        buffer = ""
        async for text in response.aiter_text():
            buffer += text
            *done, buffer = buffer.split("\n\n")
            for block in done:
                if block.startswith(":"):
                    continue
                fields = dict(line.split(": ", 1) for line in block.split("\n"))
                events.append((fields["event"], loads(fields["data"])))
    return events


async def test_started_on_a_followed_live_on_b_resumed_on_c(shared: BackendHarness) -> None:
    with gateway(shared) as (a, _), gateway(shared) as (b, _):
        async with httpx.AsyncClient(timeout=30) as http:
            stream_id = await start(http, a, 30, 0.03)
            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    genkit: list[Any] = []
                    sse: list[tuple[str, Any]] = []

                    async def by_genkit() -> None:
                        genkit.extend(await genkit_follow(http, b, stream_id))

                    async def by_sse() -> None:
                        sse.extend(await sse_follow(http, b, stream_id))

                    tg.start_soon(by_genkit)
                    tg.start_soon(by_sse)
    expected = [{"i": i} for i in range(30)]
    assert genkit[:-1] == [("message", c) for c in expected]
    assert genkit[-1] == ("data", {"result": {"total": 30}})
    assert sse == [*[("chunk", c) for c in expected], ("result", {"total": 30})]
    # A third process, after both are gone, resumes the finished stream.
    with gateway(shared) as (c, _):
        async with httpx.AsyncClient(timeout=30) as http:
            assert (await sse_follow(http, c, stream_id)) == sse


async def test_cancel_on_b_stops_the_flow_running_on_a(shared: BackendHarness) -> None:
    with gateway(shared, lease=1.5) as (a, _), gateway(shared) as (b, _):
        async with httpx.AsyncClient(timeout=30) as http:
            stream_id = await start(http, a, 100_000, 0.01)
            with anyio.fail_after(60):
                first = await genkit_follow(http, b, stream_id, stop_after=10)
                assert first == [("message", {"i": i}) for i in range(10)]  # live: still open
                cancel = await http.delete(f"{b}/count/streams/{stream_id}")
                assert cancel.json() == {"streamId": stream_id, "cancelled": True}
                rest = await sse_follow(http, b, stream_id)
    assert rest[-1] == ("error", {"status": "CANCELLED", "message": "flow cancelled"})
    assert len(rest) < 100_000


async def test_stop_on_b_ends_the_flow_running_on_a_with_its_partial_result(
    shared: BackendHarness,
) -> None:
    with gateway(shared, lease=1.5) as (a, _), gateway(shared) as (b, _):
        async with httpx.AsyncClient(timeout=30) as http:
            async with http.stream(
                "POST", a + "/words", json={"data": None}, headers=STREAM
            ) as response:
                stream_id = response.headers["x-genkit-stream-id"]
            with anyio.fail_after(60):
                stop = await http.post(f"{b}/words/streams/{stream_id}/stop")
                assert stop.json() == {"streamId": stream_id, "stopped": True}
                events: list[tuple[str, Any]] = []
                async with http.stream("GET", f"{b}/words/streams/{stream_id}") as sse:
                    buffer = ""
                    async for text in sse.aiter_text():
                        buffer += text
                        *done, buffer = buffer.split("\n\n")
                        for block in done:
                            if not block.startswith(":"):
                                fields = dict(line.split(": ", 1) for line in block.split("\n"))
                                events.append((fields["event"], loads(fields["data"])))
    kind, result = events[-1]
    assert kind == "result" and result["stopped"] is True
    assert result["said"] == [data for event, data in events if event == "chunk"]


async def test_writer_process_killed_subscriber_elsewhere_sees_abandoned(
    shared: BackendHarness,
) -> None:
    with gateway(shared, lease=1.0) as (a, proc_a), gateway(shared) as (b, _):
        async with httpx.AsyncClient(timeout=30) as http:
            stream_id = await start(http, a, 100_000, 0.01)
            with anyio.fail_after(60):
                seen = await genkit_follow(http, b, stream_id, stop_after=20)
                proc_a.send_signal(signal.SIGKILL)
                proc_a.wait(10)
                events = await sse_follow(http, b, stream_id)
            chunks = [data for kind, data in events if kind == "chunk"]
            assert events[-1] == ("error", {"status": "UNAVAILABLE", "message": "stream abandoned"})
            assert chunks[:20] == [data for _, data in seen]
            assert chunks == [{"i": i} for i in range(len(chunks))]  # every flushed chunk, in order
