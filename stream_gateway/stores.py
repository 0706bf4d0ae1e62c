"""Stores named by URL: one registry, which plugins extend through entry points.

```
.data/streams.db                      SQLite (a path, sqlite:PATH or sqlite:///abs/path)
memory:                               durable flows in this process's memory (tests)
postgresql://user@host/db#schema=sg   PostgreSQL (stream-gateway-postgres)
firestore://my-project#collection=c   Firestore streams (stream-gateway-firestore)
firestore://my-project#prefix=jobs    Firestore durable flows (stream-gateway-firestore)
redis://host:6379/0#prefix=sg         Redis, streams only (stream-gateway-redis)
https://my-db.firebaseio.com#root=r   Realtime Database, streams only (stream-gateway-rtdb)
```

The fragment (after ``#``) carries the store's own options as ``key=value`` pairs
joined by ``&``; it never reaches the server. `open_stream_storage` and
`open_durable_store` look the URL's scheme up, first among factories registered in
this process (`register_stream_store`, `register_durable_store`), then among the
installed distributions' entry points, in the groups ``stream_gateway.stream_stores``
and ``stream_gateway.durable_stores`` (the entry point's name is the scheme, its value
a factory taking a `StoreURL`). A plugin adds its stores in one place, its
``pyproject.toml``::

    [project.entry-points."stream_gateway.stream_stores"]
    postgresql = "stream_gateway_postgres.urls:stream_storage"

    [project.entry-points."stream_gateway.durable_stores"]
    postgresql = "stream_gateway_postgres.urls:durable_store"

This is the only resolver: the ``stream-gateway`` command line, ``stream-gateway-worker``,
`stream_gateway.durable.store_from_url` and the samples all open stores through it.
A scheme nobody provides is an `InvalidArgumentError` that names the distribution to
install when the scheme is one of ours, and says so when the scheme's store keeps
streams only (Redis, the Realtime Database) and a durable store was asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

from ._errors import InvalidArgumentError

if TYPE_CHECKING:
    from .durable.store import DurableStore
    from .streams.base import StreamStorage

__all__ = [
    "DURABLE_STORES",
    "STREAM_STORES",
    "StoreURL",
    "open_durable_store",
    "open_stream_storage",
    "parse_store_url",
    "register_durable_store",
    "register_stream_store",
]

#: Entry point group of stream storage factories, keyed by URL scheme.
STREAM_STORES = "stream_gateway.stream_stores"
#: Entry point group of durable store factories, keyed by URL scheme.
DURABLE_STORES = "stream_gateway.durable_stores"

# Schemes that mean the same store.
_ALIASES = {"postgres": "postgresql", "rediss": "redis", "http": "https"}
# Who provides what, for the error that says what to install.
_PROVIDERS = {
    "postgresql": "stream-gateway-postgres",
    "firestore": "stream-gateway-firestore",
    "redis": "stream-gateway-redis",
    "https": "stream-gateway-rtdb",
}
_KINDS = {STREAM_STORES: "stream store", DURABLE_STORES: "durable store"}
# Schemes whose plugin has no durable store (durable flows need claims and fenced writes).
_STREAMS_ONLY = {"redis": "Redis", "https": "a Realtime Database"}


@dataclass(frozen=True, slots=True)
class StoreURL:
    """A store URL taken apart.

    ``scheme`` is normalised (``postgres`` is ``postgresql``, ``rediss`` and ``http``
    are ``redis`` and ``https``; a plain path is ``sqlite``). ``location`` is the URL
    without its fragment (for SQLite, the file's path); ``options`` the fragment's
    ``key=value`` pairs. ``text`` is the URL as given.
    """

    text: str
    scheme: str
    location: str
    options: dict[str, str] = field(default_factory=dict)

    def option(self, name: str, default: str | None = None) -> str | None:
        """One fragment option, or ``default``."""
        return self.options.get(name, default)

    def check_options(self, *allowed: str) -> None:
        """Raise `InvalidArgumentError` for an option the store does not take."""
        unknown = sorted(set(self.options) - set(allowed))
        if unknown:
            takes = ", ".join(allowed) if allowed else "none"
            raise InvalidArgumentError(
                f"unknown option {unknown[0]!r} in store URL {self.redacted}"
                f" (a {self.scheme} store takes: {takes})"
            )

    @property
    def redacted(self) -> str:
        """The URL without a password, for messages."""
        parts = urlsplit(self.text)
        if parts.password is None:
            return self.text
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        user = f"{parts.username}:***@" if parts.username else ":***@"
        return parts._replace(netloc=user + host).geturl()


def parse_store_url(text: str) -> StoreURL:
    """Take a store URL apart; `InvalidArgumentError` if it is empty or malformed."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidArgumentError("no store given: pass a store URL or a SQLite file path")
    text = text.strip()
    head, _, fragment = text.partition("#")
    try:
        options = dict(parse_qsl(fragment, keep_blank_values=True, strict_parsing=True))
    except ValueError:
        raise InvalidArgumentError(
            f"malformed options after '#' in store URL {text!r}: use key=value&key=value"
        ) from None
    if head.lower() in ("memory:", "memory://"):
        return StoreURL(text, "memory", head, options)
    if "://" not in head:
        path = head.removeprefix("sqlite:")
        if not path:
            raise InvalidArgumentError(f"store URL {text!r} names no SQLite file")
        return StoreURL(text, "sqlite", path, options)
    scheme = head.split("://", 1)[0].lower()
    if not scheme.isascii() or not scheme.replace("+", "").replace("-", "").isalnum():
        raise InvalidArgumentError(f"malformed store URL {text!r}")
    if scheme == "sqlite":
        path = head.split("://", 1)[1]
        if not path:
            raise InvalidArgumentError(f"store URL {text!r} names no SQLite file")
        if not path.startswith("/"):  # sqlite://name/... reads as a host, not a path
            raise InvalidArgumentError(
                f"store URL {text!r}: write sqlite:///absolute/path or sqlite:relative/path"
            )
        return StoreURL(text, "sqlite", path, options)
    return StoreURL(text, _ALIASES.get(scheme, scheme), head, options)


Factory = Callable[[StoreURL], Any]
T = TypeVar("T")
_registered: dict[str, dict[str, Factory]] = {STREAM_STORES: {}, DURABLE_STORES: {}}


def register_stream_store(scheme: str, factory: Callable[[StoreURL], StreamStorage]) -> None:
    """Make ``scheme://`` URLs open a stream storage made by ``factory`` (this process only;
    distributions use the ``stream_gateway.stream_stores`` entry point group)."""
    _registered[STREAM_STORES][scheme] = factory


def register_durable_store(scheme: str, factory: Callable[[StoreURL], DurableStore]) -> None:
    """Make ``scheme://`` URLs open a durable store made by ``factory`` (this process only;
    distributions use the ``stream_gateway.durable_stores`` entry point group)."""
    _registered[DURABLE_STORES][scheme] = factory


def _factory(group: str, url: StoreURL) -> Factory:
    found = _registered[group].get(url.scheme)
    if found is not None:
        return found
    for point in entry_points(group=group):
        if _ALIASES.get(point.name, point.name) == url.scheme:
            loaded: Factory = point.load()
            return loaded
    kind = _KINDS[group]
    provider = _PROVIDERS.get(url.scheme)
    if group == DURABLE_STORES and url.scheme in _STREAMS_ONLY:
        raise InvalidArgumentError(
            f"{url.scheme}:// URLs name {_STREAMS_ONLY[url.scheme]}, which keeps streams"
            f" only ({provider} has no durable store): durable flows need a SQLite path,"
            " postgresql:// (pip install stream-gateway-postgres) or firestore://"
            " (pip install stream-gateway-firestore)"
        )
    if provider is None:
        known = (
            "a SQLite path, memory:, postgresql://, firestore://"
            if group == DURABLE_STORES
            else "a SQLite path, postgresql://, firestore://, redis://, https:// (RTDB)"
        )
        raise InvalidArgumentError(
            f"no {kind} is installed for {url.scheme}:// URLs ({url.redacted}); known"
            f" schemes: {known}"
        )
    raise InvalidArgumentError(
        f"no {kind} is installed for {url.scheme}:// URLs: it comes with the {provider}"
        f" plugin (pip install {provider}); an installed one that lacks it is too old"
        f" (entry point group {group})"
    )


def open_stream_storage(url: str | StoreURL) -> StreamStorage:
    """The stream storage a URL names (not started: a `StreamManager` starts it)."""
    parsed = url if isinstance(url, StoreURL) else parse_store_url(url)
    storage: StreamStorage = _factory(STREAM_STORES, parsed)(parsed)
    return storage


def open_durable_store(url: str | StoreURL) -> DurableStore:
    """The durable store a URL names (not started: a `DurableEngine` starts it)."""
    parsed = url if isinstance(url, StoreURL) else parse_store_url(url)
    store: DurableStore = _factory(DURABLE_STORES, parsed)(parsed)
    return store


def sqlite_stream_storage(url: StoreURL) -> StreamStorage:
    """The ``sqlite`` stream storage factory (options: ``synchronous``)."""
    from .streams.sqlite import SqliteStreamStorage

    url.check_options("synchronous")
    return SqliteStreamStorage(
        url.location, synchronous=url.option("synchronous", "FULL") or "FULL"
    )


def memory_durable_store(url: StoreURL) -> DurableStore:
    """The ``memory:`` durable store factory: this process only (no options)."""
    from .durable.memory import InMemoryDurableStore

    url.check_options()
    return InMemoryDurableStore()


def sqlite_durable_store(url: StoreURL) -> DurableStore:
    """The ``sqlite`` durable store factory (options: ``synchronous``)."""
    from .durable.sqlite import SqliteDurableStore

    url.check_options("synchronous")
    synchronous = url.option("synchronous", "FULL") or "FULL"
    return SqliteDurableStore(url.location, synchronous=synchronous)
