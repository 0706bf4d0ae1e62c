"""Where requests go and which token they carry, decided as firebase-admin decides it.

- ``https://<name>.firebaseio.com`` (or ``...firebasedatabase.app``): production. Every
  request carries ``Authorization: Bearer <OAuth2 access token>`` from the app's
  credential (`firebase_admin.credentials.Base.get_access_token`, run in a worker thread
  because it may do blocking HTTP), refreshed shortly before it expires.
- ``FIREBASE_DATABASE_EMULATOR_HOST=host:port`` set: requests go to ``http://host:port``
  with ``?ns=<name>`` (the database name from the URL) and the emulator's admin token
  ``owner``, exactly like firebase-admin's emulator mode.
- ``http://host:port?ns=<name>``: the same emulator mode, named by the URL.

An explicit ``credential`` is used in every mode (tests use it to act as a non-admin).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio

from stream_gateway import UnavailableError

__all__ = ["EMULATOR_HOST_ENV", "Endpoint", "TokenSource", "resolve_endpoint"]

EMULATOR_HOST_ENV = "FIREBASE_DATABASE_EMULATOR_HOST"
EMULATOR_TOKEN = "owner"
_REFRESH_MARGIN = 300.0  # seconds before expiry; Google access tokens live an hour
_UNKNOWN_EXPIRY_TTL = 600.0


@dataclass(frozen=True)
class Endpoint:
    """The server's base URL, the query parameters every request carries, and the mode."""

    base_url: str
    params: dict[str, str] = field(default_factory=dict)
    emulator: bool = False


def resolve_endpoint(database_url: str) -> Endpoint:
    """The endpoint for ``database_url`` and the environment (see the module docstring)."""
    parsed = urlsplit(database_url)
    if not parsed.netloc:
        raise ValueError(f"invalid database URL {database_url!r}: expected https://<name>...")
    if parsed.scheme == "http":
        names = parse_qs(parsed.query).get("ns")
        if not names or not names[0]:
            raise ValueError(
                f"invalid database URL {database_url!r}: an emulator URL names its "
                "database: http://host:port?ns=NAME"
            )
        return Endpoint(f"http://{parsed.netloc}", {"ns": names[0]}, emulator=True)
    if parsed.scheme != "https":
        raise ValueError(f"invalid database URL {database_url!r}: expected https://<name>...")
    host = os.environ.get(EMULATOR_HOST_ENV)
    if host:
        if "//" in host:
            raise ValueError(f"invalid {EMULATOR_HOST_ENV} {host!r}: expected host:port")
        return Endpoint(f"http://{host}", {"ns": parsed.netloc.split(".")[0]}, emulator=True)
    return Endpoint(f"https://{parsed.netloc}")


class TokenSource:
    """Bearer tokens: a fixed one, or access tokens from a firebase-admin credential.

    A credential's token is cached until shortly before its expiry; `invalidate` drops
    it (after a 401 or an ``auth_revoked`` event) so that the next call fetches anew.
    Concurrent callers share one fetch.
    """

    def __init__(self, *, fixed: str | None = None, credential: Any = None) -> None:
        if (fixed is None) == (credential is None):
            raise ValueError("give exactly one of fixed and credential")
        self._fixed = fixed
        self._credential = credential
        self._token: str | None = fixed
        self._refresh_at = float("inf") if fixed is not None else 0.0
        self._lock = anyio.Lock()

    @property
    def refreshable(self) -> bool:
        """True when the token comes from a credential (and so may be renewed)."""
        return self._credential is not None

    async def token(self) -> str:
        if self._token is not None and time.time() < self._refresh_at:
            return self._token
        async with self._lock:
            if self._token is None or time.time() >= self._refresh_at:
                await self._fetch()
            assert self._token is not None
            return self._token

    def invalidate(self, token: str) -> None:
        """Forget ``token`` if it is still the current one."""
        if self.refreshable and self._token == token:
            self._token, self._refresh_at = None, 0.0

    async def _fetch(self) -> None:
        try:
            info = await anyio.to_thread.run_sync(self._credential.get_access_token)
        except Exception as exc:  # the credential's own HTTP errors, of many types
            raise UnavailableError(
                f"cannot get an access token for the Realtime Database: {type(exc).__name__}"
            ) from exc
        fetched = time.time()
        expiry = _timestamp(getattr(info, "expiry", None))
        lifetime = _UNKNOWN_EXPIRY_TTL if expiry is None else max(0.0, expiry - fetched)
        self._token = str(info.access_token)
        self._refresh_at = fetched + lifetime - min(_REFRESH_MARGIN, lifetime / 2)


def _timestamp(expiry: object) -> float | None:
    """google-auth gives expiries as naive UTC datetimes."""
    if not isinstance(expiry, datetime):
        return None
    if expiry.tzinfo is None:
        expiry = expiry.replace(tzinfo=UTC)
    return expiry.timestamp()
