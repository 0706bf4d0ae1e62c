"""The project's Realtime Database stand-in server, for tests and benchmarks.

Google's RTDB emulator cannot be obtained where this project is built and tested, so the
tests run against ``tests/servers/rtdb_standin``, a server written from Firebase's REST
documentation (REST on ``.json`` paths, queries, ETags, event streams). It lives in the
source checkout, not in this package: this module starts it with
``python -m tests.servers.rtdb_standin`` from the checkout's root (found above this file,
or named by ``RTDB_STANDIN_ROOT``).

```python
from stream_gateway_rtdb.testing import shared_standin

standin = shared_standin()  # the one at RTDB_STANDIN_URL, or one started for this process
manager = RtdbStreamManager(standin.database_url("my-test-namespace"))
```

Not imported by the package root. A stand-in that will not start is an error, never a skip.
"""

from __future__ import annotations

import atexit
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

__all__ = ["StandinError", "StandinServer", "find_checkout", "shared_standin"]

URL_ENV = "RTDB_STANDIN_URL"
ROOT_ENV = "RTDB_STANDIN_ROOT"
_MODULE = "tests.servers.rtdb_standin"
_ADMIN = {"Authorization": "Bearer owner"}


class StandinError(RuntimeError):
    """The stand-in is missing, would not start, or does not answer."""


def find_checkout() -> Path:
    """The source checkout holding the stand-in (``RTDB_STANDIN_ROOT`` wins)."""
    candidates = [Path(os.environ[ROOT_ENV])] if os.environ.get(ROOT_ENV) else []
    candidates += list(Path(__file__).resolve().parents)
    for root in candidates:
        if (root / "tests" / "servers" / "rtdb_standin" / "__main__.py").is_file():
            return root
    raise StandinError(
        "the RTDB stand-in (tests/servers/rtdb_standin) was not found above "
        f"{Path(__file__).parent}; set {ROOT_ENV} to the stream-gateway checkout"
    )


class StandinServer:
    """A stand-in at ``url``: a subprocess this object runs, or an external one.

    `start` launches it on ``port`` (0: a free one, kept across `restart`), with the
    data saved to ``data_file`` when given, so that a restart keeps it. An external
    server (``url`` given) is only talked to, never started or stopped.
    """

    def __init__(
        self,
        *,
        url: str | None = None,
        port: int = 0,
        data_file: Path | None = None,
        keepalive: float = 30.0,
    ) -> None:
        self.external = url is not None
        self.url = (url or "").rstrip("/")
        self.port = (urlsplit(self.url).port or 0) if url else port
        self.data_file = data_file
        self.keepalive = keepalive
        self._process: subprocess.Popen[bytes] | None = None
        self._log: Path | None = None  # the server's stderr, removed when it stops

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def database_url(self, namespace: str) -> str:
        """An emulator-style database URL for ``namespace`` on this server."""
        return f"{self.url}/?ns={namespace}"

    def start(self, timeout: float = 30.0) -> None:
        """Launch the server and wait until it accepts connections."""
        if self.external or self.running:
            return
        command = [sys.executable, "-m", _MODULE, "--host", "127.0.0.1", "--port", str(self.port)]
        command += ["--keepalive", str(self.keepalive)]
        if self.data_file is not None:
            command += ["--data-file", str(self.data_file)]
        fd, name = tempfile.mkstemp(prefix="rtdb-standin-", suffix=".log")
        self._log = Path(name)
        with os.fdopen(fd, "wb") as log:
            process = subprocess.Popen(
                command, cwd=find_checkout(), stdout=subprocess.PIPE, stderr=log
            )
        self._process = process
        assert process.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([process.stdout], [], [], 0.1)
            if ready:
                line = process.stdout.readline().decode().strip()
                if line.startswith("rtdb-standin listening on "):
                    self.url = line.rsplit(" ", 1)[1]
                    self.port = urlsplit(self.url).port or 0
                    return
            if process.poll() is not None:
                break
        log_text = self._log.read_text()
        self.stop()
        raise StandinError(f"the RTDB stand-in did not start; its log:\n{log_text}")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s)."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()
        if self._log is not None:
            self._log.unlink(missing_ok=True)
            self._log = None

    def restart(self) -> None:
        """Stop, then start again on the same port (and data file)."""
        self.stop()
        self.start()

    # -- the test controls (``/.standin/...``) and admin REST calls -----------------------

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        async with httpx.AsyncClient(base_url=self.url, timeout=10.0) as http:
            response = await http.request(method, path, json=body, headers=_ADMIN)
        response.raise_for_status()
        return response.json() if response.content else None

    async def wipe(self, namespace: str) -> None:
        """Delete everything in ``namespace`` (other namespaces are left alone)."""
        await self._call("DELETE", f"/.json?ns={namespace}")

    async def dump(self, namespace: str, path: str = "") -> Any:
        """The value at ``path`` in ``namespace``, read as the admin."""
        return await self._call("GET", f"/{path}.json?ns={namespace}")

    async def reset(self) -> None:
        """Wipe every namespace, rule, revoked token and counter."""
        await self._call("POST", "/.standin/reset")

    async def stats(self) -> dict[str, Any]:
        """Request counters: ``{"requests": {"GET": n, ...}, "writes": n, ...}``."""
        stats: dict[str, Any] = await self._call("GET", "/.standin/stats")
        return stats

    async def deny(self, *prefixes: str) -> None:
        """Deny non-admin access at, below and above each path prefix (none: allow all)."""
        await self._call("POST", "/.standin/rules", {"deny": list(prefixes)})

    async def revoke(self, token: str) -> None:
        """Revoke ``token``: its REST calls get 401, its event streams ``auth_revoked``."""
        await self._call("POST", "/.standin/revoke", {"token": token})

    async def drop_streams(self) -> int:
        """Abort every open event stream's connection; returns how many."""
        result = await self._call("POST", "/.standin/drop-streams")
        return int(result["dropped"])


_shared: StandinServer | None = None


def shared_standin() -> StandinServer:
    """The stand-in at ``RTDB_STANDIN_URL``, else one started once for this process."""
    global _shared
    if _shared is None:
        url = os.environ.get(URL_ENV)
        server = StandinServer(url=url) if url else StandinServer()
        server.start()
        atexit.register(server.stop)
        _shared = server
    return _shared
