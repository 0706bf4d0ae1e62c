"""A throwaway PostgreSQL server, for tests and benchmarks.

```python
from stream_gateway_postgres.testing import shared_server

server = shared_server()  # the one at POSTGRES_DSN, or one started for this process
manager = PostgresStreamManager(server.dsn, schema=new_schema())
```

`PostgresServer` runs Debian's PostgreSQL binaries (``/usr/lib/postgresql/<n>/bin``,
or ``$POSTGRES_BIN``) on a data directory of its own, listening on loopback only, with
its unix socket in that directory. As root it runs them as the ``postgres`` user
(PostgreSQL refuses to run as root). A missing server is a `PostgresServerError`
with instructions, never a skip. Not imported by the package root.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = [
    "DSN_ENV",
    "PostgresServer",
    "PostgresServerError",
    "drop_schema",
    "new_schema",
    "shared_server",
]

DSN_ENV = "POSTGRES_DSN"
BIN_ENV = "POSTGRES_BIN"
_RUN_AS = "postgres"
# Settings for a disposable server: nothing here has to survive a power loss, and the
# machine is shared. A clean stop (`stop`, `restart`) still checkpoints everything.
TEST_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
}


class PostgresServerError(RuntimeError):
    """PostgreSQL is missing, would not start, or does not answer."""


def new_schema(prefix: str = "sg_test") -> str:
    """A schema name of its own, so that one test never sees another's streams."""
    return f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"


def find_bin_dir() -> Path:
    """Where ``initdb`` and ``pg_ctl`` are: ``$POSTGRES_BIN``, else the newest Debian
    ``/usr/lib/postgresql/<n>/bin``, else the ``PATH``."""
    explicit = os.environ.get(BIN_ENV)
    if explicit:
        return Path(explicit)
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if versions:
        return versions[-1].parent
    found = shutil.which("pg_ctl")
    if found is None:
        raise PostgresServerError(
            "PostgreSQL server binaries not found: `apt-get install postgresql` "
            f"(or set {BIN_ENV} to the directory holding initdb and pg_ctl)"
        )
    return Path(found).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresServer:
    """One PostgreSQL server on ``127.0.0.1:port`` with a data directory of its own, or
    an external one at ``dsn`` (only checked, never started or stopped).

    `stop` keeps the data directory, so `start` (or `restart`) brings the same
    database back; `destroy` stops the server and deletes the directory.
    """

    def __init__(
        self,
        *,
        dsn: str | None = None,
        port: int | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.external = dsn is not None
        self.settings = {**TEST_SETTINGS, **(settings or {})}
        self._may_move = dsn is None and port is None
        self.port = port or _free_port()
        self._dsn = dsn
        self._dir: Path | None = None

    @property
    def dsn(self) -> str:
        """The connection string (superuser, database ``postgres``; no TLS: the server
        has none, and asking for it costs each connect a round trip)."""
        return self._dsn or f"postgresql://{_RUN_AS}@127.0.0.1:{self.port}/postgres?sslmode=disable"

    @property
    def data_dir(self) -> Path:
        if self._dir is None:
            raise PostgresServerError("the server has no data directory: call start()")
        return self._dir / "data"

    def _run(self, args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        if os.geteuid() == 0:
            args = ["runuser", "-u", _RUN_AS, "--", *args]
        return subprocess.run(
            args, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )

    def _init(self) -> None:
        bin_dir = find_bin_dir()
        if os.geteuid() == 0:
            # In /tmp whatever TMPDIR says: the postgres user must reach it.
            self._dir = Path(tempfile.mkdtemp(prefix="sg-postgres-", dir="/tmp"))
            shutil.chown(self._dir, _RUN_AS, _RUN_AS)
        else:
            self._dir = Path(tempfile.mkdtemp(prefix="sg-postgres-"))
        done = self._run(
            [str(bin_dir / "initdb"), "-D", str(self.data_dir), "-U", _RUN_AS,
             "--auth=trust", "--encoding=UTF8", "--locale=C"],
            timeout=120,
        )  # fmt: skip
        if done.returncode != 0:
            raise PostgresServerError(f"initdb failed:\n{done.stdout}{done.stderr}")

    def start(self, timeout: float = 60.0) -> None:
        """Start the server (initialising its data directory the first time) and wait
        until it accepts connections."""
        if self.external:
            return
        if self._dir is None:
            self._init()
        for attempt in range(3):
            try:
                self._pg_ctl("start", timeout)
            except PostgresServerError as exc:
                if not (self._may_move and "in use" in str(exc)) or attempt == 2:
                    raise
                self.port = _free_port()  # taken between the probe and the bind
                continue
            self._may_move = False
            return

    def _pg_ctl(self, action: str, timeout: float, mode: str = "fast") -> None:
        assert self._dir is not None
        options = " ".join(
            [f"-c listen_addresses=127.0.0.1 -p {self.port}",
             f"-c unix_socket_directories={self._dir}"]
            + [f"-c {name}={value}" for name, value in self.settings.items()]
        )  # fmt: skip
        log = self._dir / "server.log"
        args = [str(find_bin_dir() / "pg_ctl"), action, "-D", str(self.data_dir), "-w",
                "-t", str(int(timeout)), "-m", mode]  # fmt: skip
        if action in {"start", "restart"}:
            args += ["-l", str(log), "-o", options]
        done = self._run(args, timeout + 10)
        if done.returncode != 0:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise PostgresServerError(
                f"pg_ctl {action} failed:\n{done.stdout}{done.stderr}\n{tail}"
            )

    def stop(self, timeout: float = 60.0, *, mode: str = "fast") -> None:
        """Stop the server and keep its data. ``mode``: ``"fast"`` closes connections
        and checkpoints; ``"immediate"`` kills the server as a crash would (the next
        start recovers from the WAL)."""
        if self.external or self._dir is None or not self.is_running():
            return
        self._pg_ctl("stop", timeout, mode)

    def restart(self, timeout: float = 60.0) -> None:
        """Stop, then start again on the same port with the same data."""
        self.stop(timeout)
        self.start(timeout)

    def is_running(self) -> bool:
        """True while the server's postmaster runs (from its PID file)."""
        if self._dir is None:
            return False
        pid_file = self.data_dir / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def destroy(self) -> None:
        """Stop the server and delete its data directory."""
        if self.external:
            return
        try:
            self.stop()
        finally:
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.destroy()


_shared: PostgresServer | None = None


def shared_server() -> PostgresServer:
    """This process's server: the one at ``POSTGRES_DSN`` if set, else one started now
    and destroyed at exit (``POSTGRES_DSN`` then names it, for child processes)."""
    global _shared
    if _shared is None:
        dsn = os.environ.get(DSN_ENV) or None
        server = PostgresServer(dsn=dsn)
        if not server.external:
            server.start()
            atexit.register(server.destroy)
            os.environ[DSN_ENV] = server.dsn
        _shared = server
    return _shared


async def drop_schema(dsn: str, schema: str) -> None:
    """Drop ``schema`` and everything in it (a test's own tables)."""
    import asyncpg

    from ._migrations import quote_schema

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {quote_schema(schema)} CASCADE")
    finally:
        await conn.close()
