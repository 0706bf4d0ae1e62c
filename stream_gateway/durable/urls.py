"""`store_from_url`: a durable store named by one string (a setting, a CLI option).

```
.data/durable.sqlite3                 a SQLite file (a path: no scheme)
sqlite:///abs/path.db                 the same, as a URL (sqlite:rel/path.db too)
memory:                               an in-memory store (this process only)
postgresql://user@host/db#schema=s    Postgres (stream-gateway-postgres; postgres:// too)
firestore://project#prefix=name       Firestore (stream-gateway-firestore)
```

The schemes are those of `stream_gateway.stores`, the one resolver the command lines
use too: a plugin adds its durable store there, by an entry point in the
``stream_gateway.durable_stores`` group of its ``pyproject.toml`` (or, in one process,
`stream_gateway.stores.register_durable_store`).

``STORE_URL_SCHEMES``, the dictionary plugins used to add themselves to, still works
but is deprecated: reading it warns, and a scheme set in it is registered with
`stream_gateway.stores.register_durable_store`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, MutableMapping

from .._errors import InvalidArgumentError
from ..stores import (
    DURABLE_STORES,
    StoreURL,
    _registered,
    open_durable_store,
    register_durable_store,
)
from .store import DurableStore

__all__ = ["store_from_url"]

Opener = Callable[[str], DurableStore]


def store_from_url(url: str) -> DurableStore:
    """The (not yet started) store ``url`` names: a plain file path for SQLite, or a
    URL whose scheme a `stream_gateway.stores` factory opens (`open_durable_store`,
    with its errors as `ValueError` here: an unknown scheme, or a plugin that is not
    installed, names what to write or install instead)."""
    try:
        return open_durable_store(url)
    except InvalidArgumentError as exc:
        raise ValueError(exc.message) from None


class _LegacySchemes(MutableMapping[str, Opener]):
    """The deprecated ``STORE_URL_SCHEMES``: a view of the schemes registered in this
    process; setting one registers it with `register_durable_store`."""

    def __init__(self) -> None:
        self._openers: dict[str, Opener] = {}

    def __getitem__(self, scheme: str) -> Opener:
        return self._openers[scheme]

    def __setitem__(self, scheme: str, opener: Opener) -> None:
        self._openers[scheme] = opener

        def factory(url: StoreURL) -> DurableStore:
            return opener(url.text)

        register_durable_store(scheme, factory)

    def __delitem__(self, scheme: str) -> None:
        del self._openers[scheme]
        _registered[DURABLE_STORES].pop(scheme, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._openers)

    def __len__(self) -> int:
        return len(self._openers)


_LEGACY = _LegacySchemes()


def __getattr__(name: str) -> object:
    if name == "STORE_URL_SCHEMES":
        warnings.warn(
            "STORE_URL_SCHEMES is deprecated: a plugin registers its durable store with an"
            ' entry point in the "stream_gateway.durable_stores" group (or, in one process,'
            " stream_gateway.stores.register_durable_store)",
            DeprecationWarning,
            stacklevel=2,
        )
        return _LEGACY
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
