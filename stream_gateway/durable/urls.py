"""`store_from_url`: a durable store named by one string (a setting, a CLI option).

```
.data/durable.sqlite3                 a SQLite file (a path: no scheme)
sqlite:///abs/path.db                 the same, as a URL (sqlite:rel/path.db too)
memory:                               an in-memory store (this process only)
postgresql://user@host/db#schema=s    Postgres (stream-gateway-postgres; postgres:// too)
firestore://project?prefix=name       Firestore (stream-gateway-firestore)
```

`STORE_URL_SCHEMES` maps each scheme to the function that opens it: a plugin's store
joins by one entry there. Plugins are imported only when their scheme is used.
"""

from __future__ import annotations

from collections.abc import Callable

from .memory import InMemoryDurableStore
from .sqlite import SqliteDurableStore
from .store import DurableStore

__all__ = ["STORE_URL_SCHEMES", "store_from_url"]


def _sqlite(url: str) -> DurableStore:
    path = url.removeprefix("sqlite:")
    if path.startswith("///"):
        path = path[2:]  # sqlite:///abs -> /abs
    elif path.startswith("//"):
        raise ValueError(f"{url!r}: write sqlite:///absolute/path or sqlite:relative/path")
    return SqliteDurableStore(path)


def _postgres(url: str) -> DurableStore:
    try:
        from stream_gateway_postgres import PostgresDurableStore
    except ImportError as exc:
        raise ValueError(f"{url!r} needs `pip install stream-gateway-postgres`") from exc
    return PostgresDurableStore.from_url(url)


def _firestore(url: str) -> DurableStore:
    try:
        from stream_gateway_firestore import FirestoreDurableStore
    except ImportError as exc:
        raise ValueError(f"{url!r} needs `pip install stream-gateway-firestore`") from exc
    return FirestoreDurableStore.from_url(url)


#: scheme -> the function that opens a store from its URL.
STORE_URL_SCHEMES: dict[str, Callable[[str], DurableStore]] = {
    "memory": lambda url: InMemoryDurableStore(),
    "sqlite": _sqlite,
    "postgresql": _postgres,
    "postgres": _postgres,
    "firestore": _firestore,
}


def store_from_url(url: str) -> DurableStore:
    """The (not yet started) store ``url`` names: a scheme of `STORE_URL_SCHEMES`, or a
    plain file path for SQLite. An unknown scheme is a `ValueError` listing the known."""
    scheme, colon, _ = url.partition(":")
    if not colon or "/" in scheme or "\\" in scheme or len(scheme) == 1:
        return SqliteDurableStore(url)  # a path (C:\\... on Windows has a 1-letter "scheme")
    opener = STORE_URL_SCHEMES.get(scheme.lower())
    if opener is None:
        known = ", ".join(f"{s}:" for s in sorted(STORE_URL_SCHEMES))
        raise ValueError(f"unknown durable store URL scheme {scheme!r}: use {known} or a path")
    return opener(url)
