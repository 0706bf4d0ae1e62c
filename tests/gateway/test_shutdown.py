"""Deploys and outages, with real processes: SIGTERM, SIGKILL, a locked SQLite file.

Each server is `tests.servers.flows_app` in its own OS process, with the settings
docs/shutdown.md recommends (uvicorn's ``--timeout-graceful-shutdown`` longer than
``drain_grace``) and the sample logging config, so its INFO logs can be checked.
Clients are the Python client (`stream_flow`), which resumes by itself.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import anyio
import httpx
import pytest

from stream_gateway import GatewayError
from stream_gateway._json import loads
from stream_gateway.asgi.runner import SHUTDOWN_MESSAGE
from stream_gateway.client import Reconnect, stream_flow
from stream_gateway.streams import StreamRecord
from stream_gateway.streams.sqlite import SqliteStreamStorage

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]
STREAM = {"accept": "text/event-stream", "content-type": "application/json"}
# Keep trying while the server restarts (a fresh Python process on a busy machine).
PATIENT = Reconnect(attempts=200, base=0.05, cap=0.5)


class Server:
    """One flows_app process on a SQLite file; its log goes to a file."""

    def __init__(self, db: Path, port: int = 0, *options: str) -> None:
        self.log_path = db.parent / f"server-{id(self)}.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.servers.flows_app", "--port", str(port),
             "--manager", "sqlite", "--db", str(db),
             "--log-config", str(ROOT / "samples" / "logging.json"),
             "--timeout-graceful-shutdown", "20", *options],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=self._log, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert "listening on" in line, f"server did not start: {line!r} {self.log()}"
        self.url = line.split()[-1]
        self.port = int(self.url.rsplit(":", 1)[1])

    def flow(self, name: str) -> str:
        return f"{self.url}/flows/{name}"

    def log(self) -> str:
        return self.log_path.read_text()

    async def wait(self, seconds: float) -> int:
        """Wait for the process to exit; fails if it takes longer than ``seconds``."""
        return await anyio.to_thread.run_sync(lambda: self.proc.wait(seconds))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(15)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


@pytest.fixture
def db() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp) / "streams.db"


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()


@dataclass
class Client:
    """A `stream_flow` reader: the chunks it got, then its result or error."""

    url: str
    input: Any = None
    stream_id: str | None = None
    chunks: list[Any] = field(default_factory=list)
    result: Any = None
    error: GatewayError | None = None
    done: anyio.Event = field(default_factory=anyio.Event)

    async def run(self, http: httpx.AsyncClient) -> None:
        stream = stream_flow(
            self.url, self.input, http=http, stream_id=self.stream_id, reconnect=PATIENT
        )
        try:
            async for chunk in stream:
                self.stream_id = stream.stream_id
                self.chunks.append(chunk)
            self.result = await stream.result()
        except GatewayError as exc:
            self.error = exc
        finally:
            self.stream_id = stream.stream_id
            self.done.set()


async def until(condition: Any) -> None:
    with anyio.fail_after(60):  # against hangs only
        while not condition():  # noqa: ASYNC110 - polls what the clients collected
            await anyio.sleep(0.02)


async def start_stream(url: str, n: int, delay: float) -> str:
    async with (
        httpx.AsyncClient(timeout=30) as http,
        http.stream("POST", url, json={"data": {"n": n, "delay": delay}}, headers=STREAM) as r,
    ):
        return r.headers["x-genkit-stream-id"]


async def records(db: Path, stream_ids: list[str]) -> dict[str, StreamRecord]:
    storage = SqliteStreamStorage(db)
    await storage.start()
    try:
        found = {sid: await storage.load(sid) for sid in stream_ids}
    finally:
        await storage.close()
    assert all(found.values())
    return {sid: record for sid, record in found.items() if record is not None}


def assert_matches_the_store(client: Client, record: StreamRecord) -> None:
    """The client saw exactly the stored stream: every chunk once, then its end."""
    assert client.chunks == [{"i": k} for k in range(record.length)]
    assert record.terminal is not None
    if record.terminal.kind == "done":
        assert client.error is None, f"a terminal error for a stream with a result: {client}"
        assert client.result == loads(record.terminal.payload)
    else:
        body = loads(record.terminal.payload)
        assert client.error is not None
        assert (client.error.status, client.error.message) == (body["status"], body["message"])


async def test_sigterm_mid_stream_every_client_gets_its_end_or_resumes_it(
    db: Path, servers: list[Server]
) -> None:
    a = Server(db, 0, "--drain-grace", "3", "--lease", "3")
    other = Server(db, 0)  # another process on the same file; it stays up
    servers += [a, other]
    remote = await start_stream(other.flow("count"), 80, 0.05)  # 4 s, written by `other`
    clients = [
        Client(a.flow("count"), {"n": 10, "delay": 0.1}),  # ends within the drain
        Client(a.flow("count"), {"n": 25, "delay": 0.1}),  # ends within the drain
        Client(a.flow("count"), {"n": 2000, "delay": 0.05}),  # cannot end in the grace
        Client(a.flow("count"), stream_id=remote),  # followed through `a`
    ]
    async with httpx.AsyncClient(timeout=30) as http, anyio.create_task_group() as tg:
        for client in clients:
            tg.start_soon(client.run, http)
        await until(lambda: all(c.chunks for c in clients))

        a.proc.send_signal(signal.SIGTERM)
        # The drain starts on the signal, not once the connections have closed: the
        # process is gone within its grace, although a flow runs for 100 s more.
        await a.wait(60)
        log = a.log()
        assert "draining 3 running flows (grace 3.0s)" in log
        assert "drain grace over: stopping 1 flows" in log
        assert "drain finished" in log
        assert "opened (flow 'count', owner " in log

        # Same port, same file: clients that were cut come back here.
        servers.append(Server(db, a.port, "--lease", "3"))
        with anyio.fail_after(90):
            for client in clients:
                await client.done.wait()

    ids = [c.stream_id for c in clients]
    assert all(ids)
    stored = await records(db, [sid for sid in ids if sid])
    for client in clients:
        assert client.stream_id is not None
        assert_matches_the_store(client, stored[client.stream_id])
    short, medium, endless, followed = (stored[sid] for sid in ids if sid)
    assert short.status == medium.status == followed.status == "done"
    assert endless.terminal is not None
    assert loads(endless.terminal.payload) == {"status": "UNAVAILABLE", "message": SHUTDOWN_MESSAGE}


async def test_sigkill_after_the_orchestrators_timeout_leaves_no_client_hanging(
    db: Path, servers: list[Server]
) -> None:
    # A grace longer than the orchestrator waits: SIGTERM, then SIGKILL mid-drain.
    a = Server(db, 0, "--drain-grace", "60", "--lease", "1")
    servers.append(a)
    clients = [Client(a.flow("count"), {"n": 1000, "delay": 0.02}) for _ in range(4)]
    async with httpx.AsyncClient(timeout=30) as http, anyio.create_task_group() as tg:
        for client in clients:
            tg.start_soon(client.run, http)
        await until(lambda: all(len(c.chunks) > 5 for c in clients))
        a.proc.send_signal(signal.SIGTERM)
        await anyio.sleep(0.3)
        a.proc.kill()
        await a.wait(30)
        servers.append(Server(db, a.port, "--lease", "1"))
        with anyio.fail_after(90):
            for client in clients:
                await client.done.wait()

    stored = await records(db, [c.stream_id for c in clients if c.stream_id])
    for client in clients:
        assert client.stream_id is not None
        record = stored[client.stream_id]
        # Every committed chunk, once; then the honest end of a writer that died,
        # recorded by the first reader that found its lease lapsed.
        assert record.status == "error"
        assert record.terminal is not None and b"stream abandoned" in record.terminal.payload
        assert client.chunks == [{"i": k} for k in range(record.length)]
        assert client.error is not None
        assert (client.error.status, client.error.message) == ("UNAVAILABLE", "stream abandoned")


async def test_an_outage_past_the_window_ends_the_stream_and_sigterm_still_stops(
    db: Path, servers: list[Server]
) -> None:
    a = Server(db, 0, "--write-retry-for", "1", "--busy-timeout", "0.1", "--lease", "3")
    servers.append(a)
    client = Client(a.flow("count"), {"n": 100_000, "delay": 0.01})  # 100 chunks/s
    locker = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    try:
        async with httpx.AsyncClient(timeout=30) as http, anyio.create_task_group() as tg:
            tg.start_soon(client.run, http)
            await until(lambda: len(client.chunks) > 20)
            locker.execute("BEGIN IMMEDIATE")  # the server can no longer write
            # The client gets the end while the outage lasts: no queue of flushes,
            # no wait with no lease check.
            with anyio.fail_after(60):
                await client.done.wait()
            a.proc.send_signal(signal.SIGTERM)
            await a.wait(60)  # the shielded finish is bounded: SIGTERM stops it
            assert "writes failed (retried for up to 1.0s), giving up" in a.log()
    finally:
        locker.close()
    assert client.error is not None and client.error.status == "UNAVAILABLE"
    assert client.chunks == [{"i": k} for k in range(len(client.chunks))]


def start_demo(port: int, db: Path, log: IO[str]) -> subprocess.Popen[bytes]:
    """What ``make demo`` runs, on ``port`` and the SQLite file ``db``."""
    return subprocess.Popen(
        ["scripts/demo.sh", "127.0.0.1", str(port)],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        env={"PATH": "/usr/bin:/bin", "STREAM_BACKEND": "sqlite", "STREAM_DB": str(db)},
    )  # fmt: skip


async def test_make_demo_shows_stream_and_drain_logs(db: Path) -> None:
    import socket

    with socket.socket() as probe:  # a free port (the demo takes a fixed one)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log_path = db.parent / "demo.log"
    with log_path.open("w") as log:
        proc = start_demo(port, db, log)
        try:
            url = f"http://127.0.0.1:{port}/flows/chat"
            async with httpx.AsyncClient(timeout=30) as http:
                with anyio.fail_after(60):
                    while "startup complete" not in log_path.read_text():  # noqa: ASYNC110
                        await anyio.sleep(0.05)
                stream = stream_flow(url, {"prompt": "hi"}, http=http)
                assert await stream.result()
            proc.send_signal(signal.SIGTERM)  # demo.sh execs uvicorn: this is uvicorn
            await anyio.to_thread.run_sync(lambda: proc.wait(60))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(15)
    text = log_path.read_text()
    assert "stream_gateway.streams: stream " in text
    assert "opened (flow 'chat', owner " in text
    assert "ended: done after" in text and "(flow 'chat', owner " in text
    assert "stream_gateway.runner: drain finished" in text
