"""Stores named by URL: one registry, which plugins extend through entry points.

```
.data/streams.db                      SQLite (a path, or sqlite:PATH)
postgresql://user@host/db#schema=sg   PostgreSQL (stream-gateway-postgres)
firestore://my-project#collection=c   Firestore (stream-gateway-firestore)
redis://host:6379/0#prefix=sg         Redis (stream-gateway-redis)
https://my-db.firebaseio.com#root=r   Realtime Database (stream-gateway-rtdb)
```

The fragment (after ``#``) carries the store's own options as ``key=value`` pairs
joined by ``&``; it never reaches the server. `open_stream_storage` and
`open_durable_store` look the URL's scheme up, first among factories registered in
this process (`register_stream_store`, `register_durable_store`), then among the
installed distributions' entry points, in the groups ``stream_gateway.stream_stores``
and ``stream_gateway.durable_stores`` (the entry point's name is the scheme, its value
a factory taking a `StoreURL`). A plugin adds a store in one place, its
``pyproject.toml``::

    [project.entry-points."stream_gateway.durable_stores"]
    postgresql = "stream_gateway_postgres.urls:durable_store"

A scheme nobody provides is an `InvalidArgumentError` that names the distribution to
install when the scheme is one of ours.
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
    if provider is None:
        raise InvalidArgumentError(
            f"no {kind} is installed for {url.scheme}:// URLs ({url.redacted}); known"
            " schemes: a SQLite path, postgresql://, firestore://, redis://, https:// (RTDB)"
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


def sqlite_durable_store(url: StoreURL) -> DurableStore:
    """The ``sqlite`` durable store factory (options: ``synchronous``)."""
    from .durable.sqlite import SqliteDurableStore

    url.check_options("synchronous")
    synchronous = url.option("synchronous", "FULL") or "FULL"
    return SqliteDurableStore(url.location, synchronous=synchronous)
