"""Responses cut because their stream may still finish, and the shutdown signal hook.

A cut ends a response the way its protocol's clients read "reconnect": SSE ends the
body cleanly, the Genkit endpoint breaks the connection; never a terminal frame.
"""

from __future__ import annotations

import signal
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Literal

import anyio
import httpx
import pytest

from stream_gateway import Gateway, StreamManager
from stream_gateway._json import loads
from stream_gateway.asgi._http import FrameResponse, ResponseCut, Write
from stream_gateway.asgi._signals import on_shutdown_signal
from stream_gateway.streams import StreamWriter
from stream_gateway.streams.sqlite import SqliteStreamStorage
from tests.faults import FlakyStorage
from tests.gateway.conftest import serve
from tests.servers.flows_app import count

pytestmark = pytest.mark.anyio
STREAM = {"accept": "text/event-stream", "content-type": "application/json"}


async def call(response: FrameResponse, *, cancel_after: float | None = None) -> list[Any]:
    """Run an ASGI response against a client that never disconnects; what it sent."""
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        await anyio.sleep_forever()
        raise AssertionError

    async def send(message: Any) -> None:
        sent.append(message)

    if cancel_after is None:
        await response({"type": "http"}, receive, send)
    else:
        with anyio.move_on_after(cancel_after):  # the server's graceful-shutdown timeout
            await response({"type": "http"}, receive, send)
    return sent[1:]  # the body messages


async def cut_after_one_frame(write: Write) -> None:
    await write(b"data: 1\n\n")
    raise ResponseCut


async def one_frame_then_wait(write: Write) -> None:
    await write(b"data: 1\n\n")
    await anyio.sleep_forever()


@pytest.mark.parametrize(
    ("cut", "bodies", "complete"),
    [
        ("close", [b"data: 1\n\n", b""], True),  # SSE: a clean end
        ("abort", [b"data: 1\n\n"], False),  # Genkit: incomplete, the server drops it
        (b"bye\n\n", [b"data: 1\n\n", b"bye\n\n", b""], True),  # nothing to resume
    ],
)
async def test_a_cut_ends_the_response_as_its_protocol_reads_reconnect(
    cut: Literal["close", "abort"] | bytes, bodies: list[bytes], complete: bool
) -> None:
    sent = await call(FrameResponse(cut_after_one_frame, media_type="text/plain", cut=cut))
    assert [m["body"] for m in sent] == bodies
    assert sent[-1]["more_body"] is not complete


@pytest.mark.parametrize(
    ("cut", "bodies", "complete"),
    [("close", [b"data: 1\n\n", b""], True), ("abort", [b"data: 1\n\n"], False)],
)
async def test_a_response_cancelled_by_the_server_ends_the_same_way(
    cut: Literal["close", "abort"], bodies: list[bytes], complete: bool
) -> None:
    response = FrameResponse(one_frame_then_wait, media_type="text/plain", cut=cut)
    sent = await call(response, cancel_after=0.2)
    assert [m["body"] for m in sent] == bodies
    assert sent[-1]["more_body"] is not complete


@pytest.fixture
def handlers() -> Iterator[None]:
    """Put SIGINT and SIGTERM back as they were."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


async def test_the_signal_starts_the_drain_and_the_servers_handler_still_runs(
    handlers: None,
) -> None:
    calls: list[str] = []

    def server_handler(signum: int, frame: object) -> None:
        calls.append(f"server {signum}")

    signal.signal(signal.SIGTERM, server_handler)
    drained = anyio.Event()

    def begin() -> None:
        calls.append("drain")
        drained.set()

    with on_shutdown_signal(begin) as hooked:
        assert hooked
        signal.raise_signal(signal.SIGTERM)
        with anyio.fail_after(10):
            await drained.wait()
    assert calls == [f"server {int(signal.SIGTERM)}", "drain"]
    assert signal.getsignal(signal.SIGTERM) is server_handler  # restored


async def test_no_hook_where_the_signal_would_end_the_process_anyway(handlers: None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with on_shutdown_signal(lambda: None) as hooked:
        assert not hooked
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


# -- the gateway: following a stream another process writes ---------------------------


@pytest.fixture
def db() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp) / "streams.db"


async def sse_events(http: httpx.AsyncClient, url: str) -> list[str]:
    """The event types of an SSE response, until its body ends."""
    events: list[str] = []
    async with http.stream("GET", url) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                events.append(line[7:])
    return events


async def genkit_follow(http: httpx.AsyncClient, url: str, stream_id: str) -> list[bytes]:
    """The frames of a Genkit reconnect, until the body ends (or breaks: raises)."""
    frames: list[bytes] = []
    headers = {**STREAM, "x-genkit-stream-id": stream_id}
    async with http.stream("POST", url, headers=headers) as response:
        buffer = b""
        async for data in response.aiter_bytes():
            *done, buffer = (buffer + data).split(b"\n\n")
            frames += done
    return frames


async def keep_writing(writer: StreamWriter, stop: anyio.Event) -> None:
    """The other process's flow: a chunk every 20 ms until told to finish."""
    i = 0
    while not stop.is_set():
        await writer.write(i)
        i += 1
        await anyio.sleep(0.02)
    await writer.done("finished elsewhere")


@pytest.fixture
async def other_process(db: Path) -> AsyncIterator[StreamManager]:
    async with StreamManager(SqliteStreamStorage(db)) as manager:
        yield manager


async def test_shutdown_cuts_followers_of_other_processes_streams_only(
    db: Path, other_process: StreamManager
) -> None:
    gateway = Gateway([count], stream_manager=StreamManager(SqliteStreamStorage(db)))
    remote = await other_process.open(flow="count")
    stop = anyio.Event()
    async with (
        serve(gateway) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(keep_writing, remote, stop)
        async with http.stream(
            "POST", "/count", json={"data": {"n": 30, "delay": 0.05}}, headers=STREAM
        ) as r:
            local = r.headers["x-genkit-stream-id"]
        results: dict[str, Any] = {}

        async def follow(name: str, how: Any) -> None:
            try:
                results[name] = await how()
            except httpx.RemoteProtocolError as exc:
                results[name] = exc

        base = "/count/streams/"
        tg.start_soon(follow, "remote sse", lambda: sse_events(http, base + remote.stream_id))
        tg.start_soon(
            follow, "remote genkit", lambda: genkit_follow(http, "/count", remote.stream_id)
        )
        tg.start_soon(follow, "local sse", lambda: sse_events(http, base + local))
        await anyio.sleep(0.3)  # all three are following
        gateway.begin_shutdown()
        with anyio.fail_after(30):
            while len(results) < 3:  # noqa: ASYNC110 - the followers report here
                await anyio.sleep(0.02)
        stop.set()

    # The remote stream goes on elsewhere: no terminal frame, a broken Genkit body.
    assert results["remote sse"] and "error" not in results["remote sse"]
    assert "result" not in results["remote sse"]
    assert isinstance(results["remote genkit"], httpx.RemoteProtocolError)
    # The local flow finished within the drain: its follower got its result.
    assert results["local sse"][-1] == "result"
    assert results["local sse"].count("chunk") == 30


async def test_a_backend_this_process_cannot_read_cuts_without_a_terminal_frame(
    db: Path, other_process: StreamManager
) -> None:
    flaky = FlakyStorage(SqliteStreamStorage(db))
    gateway = Gateway([count], stream_manager=StreamManager(flaky, write_retry_for=0.3))
    remote = await other_process.open(flow="count")
    stop = anyio.Event()
    async with (
        serve(gateway) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(keep_writing, remote, stop)
        results: dict[str, Any] = {}

        async def follow(name: str, how: Any) -> None:
            try:
                results[name] = await how()
            except httpx.RemoteProtocolError as exc:
                results[name] = exc

        tg.start_soon(follow, "sse", lambda: sse_events(http, f"/count/streams/{remote.stream_id}"))
        tg.start_soon(follow, "genkit", lambda: genkit_follow(http, "/count", remote.stream_id))
        await anyio.sleep(0.3)
        flaky.down = True  # this process loses the backend; the writer does not
        with anyio.fail_after(30):
            while len(results) < 2:  # noqa: ASYNC110 - the followers report here
                await anyio.sleep(0.02)
        flaky.down = False
        stop.set()
    assert "chunk" in results["sse"] and "error" not in results["sse"]
    assert isinstance(results["genkit"], httpx.RemoteProtocolError)
    # The stream did finish, with its result, which a reconnect would have found.
    record = await other_process.info(remote.stream_id)
    assert record.terminal is not None and loads(record.terminal.payload) == "finished elsewhere"
