"""Running the command line from tests: in this process (Click's runner, in a worker
thread so that its own event loop does not meet the test's) or as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread
from click.testing import CliRunner

from stream_gateway.cli._app import cli
from tests.backends import BackendHarness

SCRIPTS = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Outcome:
    """What a command printed and how it exited."""

    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        """The one JSON document printed on stdout."""
        assert self.code == 0, f"exit {self.code}: {self.stderr}"
        return json.loads(self.stdout)

    def lines(self) -> list[Any]:
        """Every line of stdout, each parsed as JSON."""
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    def error(self) -> dict[str, Any]:
        """The JSON error printed on stderr (``--json``)."""
        body: dict[str, Any] = json.loads(self.stderr.strip().splitlines()[-1])["error"]
        return body


def invoke(*args: str) -> Outcome:
    """Run ``stream-gateway ARGS`` in this process."""
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return Outcome(result.exit_code, result.stdout, result.stderr)


async def ainvoke(*args: str) -> Outcome:
    """`invoke`, from an async test (the command runs its own event loop in a thread)."""
    return await anyio.to_thread.run_sync(lambda: invoke(*args))


async def aspawn(*args: str) -> Outcome:
    """`spawn`, from an async test."""
    return await anyio.to_thread.run_sync(lambda: spawn(*args))


def runner_for(backend: BackendHarness) -> Callable[..., Awaitable[Outcome]]:
    """How a test runs commands on ``backend``: in this process, except for Firestore,
    whose gRPC client keeps process-wide state bound to the first event loop that
    used it (each in-process command runs, and closes, an event loop of its own)."""
    return aspawn if backend.name == "firestore" else ainvoke


def spawn(*args: str, timeout: float = 60) -> Outcome:
    """Run the installed ``stream-gateway`` console script as a process of its own."""
    done = subprocess.run(
        [str(SCRIPTS / "stream-gateway"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    return Outcome(done.returncode, done.stdout, done.stderr)


def store_url(backend: BackendHarness) -> str:
    """The ``--store`` URL of a test backend's data."""
    if backend.name == "firestore":
        return f"firestore://{backend.location}"
    if backend.name == "redis":
        url, _, prefix = backend.location.partition("#")
        return f"{url}#prefix={prefix}"
    return backend.location  # a SQLite path, a Postgres DSN with #schema=, an RTDB URL
