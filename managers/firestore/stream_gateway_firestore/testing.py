"""Google's Firestore emulator, for tests and benchmarks.

```python
from stream_gateway_firestore.testing import shared_emulator

emulator = shared_emulator()  # started once per process, or the one in FIRESTORE_EMULATOR_HOST
manager = FirestoreStreamManager(project=emulator.project)
```

A missing emulator is an error with a clear message, never a silent skip. Not
imported by the package root: it runs a Java process.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

__all__ = ["EmulatorError", "FirestoreEmulator", "new_project_id", "shared_emulator"]

#: Where Debian's ``google-cloud-cli-firestore-emulator`` puts the jar.
DEFAULT_JAR = Path(
    "/usr/lib/google-cloud-sdk/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar"
)
_MAIN_CLASS = "com.google.cloud.datastore.emulator.firestore.CloudFirestore"
HOST_ENV = "FIRESTORE_EMULATOR_HOST"
JAR_ENV = "FIRESTORE_EMULATOR_JAR"


class EmulatorError(RuntimeError):
    """The emulator is missing, would not start, or does not answer."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def new_project_id(prefix: str = "sg-test") -> str:
    """A project id of its own, so that one run never wipes another's data."""
    return f"{prefix}-{os.getpid()}-{secrets.token_hex(3)}"


class FirestoreEmulator:
    """One emulator process on ``127.0.0.1:port``, or an external one at ``address``.

    `start` launches it (``FIRESTORE_EMULATOR_JAR`` overrides the jar's path); an
    external emulator (``address`` given) is only checked, never started or stopped.
    Data lives in memory: `stop` then `start` (or `restart`) loses it all.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        address: str | None = None,
        project: str | None = None,
        jar: Path | None = None,
    ) -> None:
        self.external = address is not None
        # A port we picked may be taken by the time Java binds it (another socket's
        # ephemeral port): until the first start succeeds, a clash means a new port.
        self._may_move = address is None and port is None
        self.address = address or f"127.0.0.1:{port or _free_port()}"
        self.project = project or new_project_id()
        self.jar = jar or Path(os.environ.get(JAR_ENV) or DEFAULT_JAR)
        self._process: subprocess.Popen[bytes] | None = None
        self._log: Path | None = None
        self._import: Path | None = None

    def start(self, timeout: float = 60.0, *, import_data: Path | None = None) -> None:
        """Start the emulator (or check the external one) and wait until it answers;
        with the documents of an `export` when ``import_data`` is given."""
        self._import = import_data
        if self.external:
            if not self.is_up():
                raise EmulatorError(
                    f"{HOST_ENV}={self.address} is set, but no Firestore emulator answers there"
                )
            return
        if self._process is not None:
            return
        java = shutil.which("java")
        if java is None:
            raise EmulatorError("the Firestore emulator needs Java: `apt-get install default-jre`")
        if not self.jar.is_file():
            raise EmulatorError(
                f"Firestore emulator jar not found at {self.jar}: install it with "
                "`apt-get install google-cloud-cli-firestore-emulator` or set "
                f"{JAR_ENV} to its path"
            )
        for attempt in range(3):
            try:
                self._launch(java, timeout)
            except EmulatorError as exc:
                if not (self._may_move and "BindException" in str(exc)) or attempt == 2:
                    raise
                self.address = f"127.0.0.1:{_free_port()}"
                continue
            self._may_move = False
            return

    def _launch(self, java: str, timeout: float) -> None:
        host, port = self.address.rsplit(":", 1)
        fd, log = tempfile.mkstemp(prefix="firestore-emulator-", suffix=".log")
        self._log = Path(log)
        with os.fdopen(fd, "wb") as out:
            self._process = subprocess.Popen(
                [
                    java,
                    "-cp",
                    str(self.jar),
                    _MAIN_CLASS,
                    "start",
                    f"--host={host}",
                    f"--port={port}",
                    *([f"--import-data={self._import}"] if self._import else []),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while not self.is_up():
            if self._process.poll() is not None or time.monotonic() > deadline:
                tail = self._log.read_text(errors="replace")[-2000:]
                self.stop()
                raise EmulatorError(f"Firestore emulator did not start on {self.address}:\n{tail}")
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop the emulator this object started; its data is gone."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        if self._log is not None:
            self._log.unlink(missing_ok=True)
            self._log = None

    def restart(self, timeout: float = 60.0) -> None:
        """Stop and start again on the same port (an empty database)."""
        self.stop()
        self.start(timeout)

    def export(self, directory: Path) -> Path:
        """Export ``project``'s documents under ``directory``; returns the file that
        `start` takes as ``import_data`` (an emulator stopped and started with it keeps
        what was exported; later writes are lost, as in a crash)."""
        response = httpx.post(
            f"http://{self.address}/emulator/v1/projects/{self.project}:export",
            json={
                "database": f"projects/{self.project}/databases/(default)",
                "export_directory": str(directory),
            },
            timeout=120.0,
        )
        response.raise_for_status()
        return max(
            directory.glob("*/*.overall_export_metadata"), key=lambda path: path.stat().st_mtime
        )

    def is_up(self) -> bool:
        try:
            return httpx.get(f"http://{self.address}/", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def _documents_url(self, project: str | None) -> str:
        return (
            f"http://{self.address}/emulator/v1/projects/{project or self.project}"
            "/databases/(default)/documents"
        )

    def wipe(self, project: str | None = None) -> None:
        """Delete every document of ``project`` (this emulator's own by default)."""
        httpx.delete(self._documents_url(project), timeout=30.0).raise_for_status()

    async def awipe(self, project: str | None = None) -> None:
        """`wipe`, without blocking the event loop."""
        async with httpx.AsyncClient(timeout=30.0) as http:
            (await http.delete(self._documents_url(project))).raise_for_status()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


_shared: FirestoreEmulator | None = None


def shared_emulator() -> FirestoreEmulator:
    """This process's emulator: the one at ``FIRESTORE_EMULATOR_HOST`` if set, else one
    started now and stopped at exit (``FIRESTORE_EMULATOR_HOST`` then points at it).

    Its ``project`` is fresh for each process. Raises `EmulatorError` when no
    emulator can be had.
    """
    global _shared
    if _shared is None:
        address = os.environ.get(HOST_ENV) or None  # empty means unset
        emulator = FirestoreEmulator(address=address)
        emulator.start()
        if not emulator.external:
            atexit.register(emulator.stop)
            os.environ[HOST_ENV] = emulator.address
        _shared = emulator
    return _shared
