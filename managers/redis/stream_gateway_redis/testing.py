"""A throwaway ``redis-server`` for tests and benchmarks, on loopback.

```python
from stream_gateway_redis.testing import RedisServer, shared_server

server = shared_server()  # the one at REDIS_URL, or one started for this process
manager = RedisStreamManager(server.url, prefix="my-test")
```

`RedisServer` runs the ``redis-server`` binary (Debian's package; ``make test``
installs it) with a config of its own: bound to 127.0.0.1, a free port, a temporary
directory, the append-only file on (``appendfsync`` as asked), no RDB snapshots.
Not imported by the package root. A missing or failing server is an error, never a skip.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["RedisServer", "RedisServerError", "shared_server", "wipe"]

URL_ENV = "REDIS_URL"
BINARY_ENV = "REDIS_SERVER"


class RedisServerError(RuntimeError):
    """``redis-server`` is missing, would not start, or does not answer."""


# A cluster node also listens on its port + 10000, so its port must be at most this.
_MAX_CLUSTER_PORT = 55535


def _free_port(maximum: int = 65535) -> int:
    """A loopback port free now, at most ``maximum`` (the kernel's ephemeral range may
    start above a cluster node's limit: probe again, a bounded number of times)."""
    for _ in range(1000):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port <= maximum:
            return port
    raise RedisServerError(f"no free loopback port at most {maximum}")


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A ``redis-server`` this object runs (or, given ``url``, one it only points at).

    ``directory``: where the AOF and the log go (default: a temporary directory,
    removed by `cleanup`); kept across `restart`, as is the port, so a restarted server
    reloads its data. ``appendfsync``: ``"everysec"`` (Redis's default) or ``"always"``.
    ``persistence=False``: no AOF and no snapshots, so a restart starts empty.
    ``config``: more lines for its config file (``"cluster-enabled yes"``, ...).
    """

    def __init__(
        self,
        *,
        url: str | None = None,
        directory: Path | None = None,
        appendfsync: str = "everysec",
        persistence: bool = True,
        config: Sequence[str] = (),
    ) -> None:
        self.external = url is not None
        self.url = url or ""
        self.port = 0
        self.appendfsync = appendfsync
        self.persistence = persistence
        self.extra_config = list(config)
        self._own_dir = directory is None
        self.directory = directory or Path(tempfile.mkdtemp(prefix="sg-redis-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._process.pid if self.running and self._process else None

    @property
    def running(self) -> bool:
        """Whether the server this object started is still running."""
        return self._process is not None and self._process.poll() is None

    @property
    def log(self) -> Path:
        """The server's log file (in its directory)."""
        return self.directory / "redis.log"

    def _config(self, port: int) -> Path:
        config = self.directory / "redis.conf"
        config.write_text(
            "\n".join(
                [
                    "bind 127.0.0.1",
                    "protected-mode yes",
                    f"port {port}",
                    f"dir {self.directory}",
                    f"logfile {self.log}",
                    "daemonize no",
                    'save ""',
                    f"appendonly {'yes' if self.persistence else 'no'}",
                    f"appendfsync {self.appendfsync}",
                    "maxmemory-policy noeviction",
                    *self.extra_config,
                    "",
                ]
            )
        )
        return config

    def start(self, timeout: float = 30.0) -> None:
        """Launch the server and wait until it answers PING."""
        if self.external or self.running:
            return
        binary = os.environ.get(BINARY_ENV) or shutil.which("redis-server")
        if binary is None or not os.access(binary, os.X_OK):
            raise RedisServerError(
                f"redis-server not found ({binary or 'not on PATH'}): install Debian's "
                "redis-server package (`make test` does), or set REDIS_URL to a running server"
            )
        # A port taken between the probe and the bind: try a fresh one (a restart keeps
        # its port, since the data's clients expect it there).
        for attempt in range(3):
            cluster = any(line.startswith("cluster-enabled yes") for line in self.extra_config)
            port = self.port or _free_port(_MAX_CLUSTER_PORT if cluster else 65535)
            self.log.unlink(missing_ok=True)
            process = subprocess.Popen(
                [binary, str(self._config(port))],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self._process = process
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and process.poll() is None:
                if _ping(port):
                    self.port = port
                    self.url = f"redis://127.0.0.1:{port}/0"
                    return
                time.sleep(0.05)
            log = self.log.read_text() if self.log.exists() else "(no log)"
            self.stop()
            if "Address already in use" not in log or self.port or attempt == 2:
                raise RedisServerError(f"redis-server did not start; its log:\n{log}")
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Stop the server: SIGTERM (it writes and syncs its AOF), SIGKILL after 10 s."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def kill(self) -> None:
        """Kill the server at once (SIGKILL): what it had not yet synced is lost."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()

    def restart(self) -> None:
        """Stop, then start again on the same port with the same data."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop, and remove the directory if this object made it."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)


_shared: RedisServer | None = None


def shared_server() -> RedisServer:
    """The server at ``REDIS_URL``, else one started once for this process."""
    global _shared
    if _shared is None:
        url = os.environ.get(URL_ENV)
        server = RedisServer(url=url) if url else RedisServer()
        server.start()
        atexit.register(server.cleanup)
        _shared = server
    return _shared


async def wipe(url: str, prefix: str) -> int:
    """Delete every key under ``prefix:`` on the server at ``url``; returns how many."""
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=500)]
        for start in range(0, len(keys), 500):
            await client.delete(*keys[start : start + 500])
        return len(keys)
    finally:
        await client.aclose()
