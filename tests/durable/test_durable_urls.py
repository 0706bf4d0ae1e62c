"""`store_from_url`: paths and URLs to stores; unknown schemes name the known ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_gateway.durable import (
    STORE_URL_SCHEMES,
    InMemoryDurableStore,
    SqliteDurableStore,
    store_from_url,
)


def test_a_path_or_a_sqlite_url_is_a_sqlite_store(tmp_path: Path) -> None:
    for url, path in [
        (".data/x.sqlite3", ".data/x.sqlite3"),
        (f"sqlite://{tmp_path}/x.db", f"{tmp_path}/x.db"),
        ("sqlite:rel/x.db", "rel/x.db"),
        ("C:\\data\\x.db", "C:\\data\\x.db"),
    ]:
        store = store_from_url(url)
        assert isinstance(store, SqliteDurableStore) and store.path == Path(path), url


def test_memory_and_unknown_schemes() -> None:
    assert isinstance(store_from_url("memory:"), InMemoryDurableStore)
    with pytest.raises(ValueError, match=r"unknown durable store URL scheme 'redis'.*postgresql:"):
        store_from_url("redis://localhost")
    with pytest.raises(ValueError, match="sqlite:///absolute"):
        store_from_url("sqlite://host/x.db")


def test_a_plugin_adds_its_scheme_in_one_place(monkeypatch: pytest.MonkeyPatch) -> None:
    made = InMemoryDurableStore()
    monkeypatch.setitem(STORE_URL_SCHEMES, "custom", lambda url: made)
    assert store_from_url("custom://anything") is made
