"""`store_from_url` and the worker CLI's ``--db`` open stores through `stream_gateway.stores`:
paths and URLs to stores; unknown schemes name what to write or install."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_gateway import InvalidArgumentError
from stream_gateway.durable import (
    InMemoryDurableStore,
    SqliteDurableStore,
    store_from_url,
)
from stream_gateway.durable.cli import load_engine
from stream_gateway.stores import _registered as registered
from stream_gateway.stores import open_durable_store, register_durable_store


def test_a_path_or_a_sqlite_url_is_a_sqlite_store(tmp_path: Path) -> None:
    for url, path in [
        (".data/x.sqlite3", ".data/x.sqlite3"),
        (f"sqlite://{tmp_path}/x.db", f"{tmp_path}/x.db"),
        ("sqlite:rel/x.db", "rel/x.db"),
        ("C:\\data\\x.db", "C:\\data\\x.db"),
    ]:
        store = store_from_url(url)
        assert isinstance(store, SqliteDurableStore) and store.path == Path(path), url
        assert isinstance(open_durable_store(url), SqliteDurableStore), url


def test_the_worker_cli_opens_the_same_stores(tmp_path: Path) -> None:
    db = str(tmp_path / "w.db")
    engine = load_engine("samples.approval.flows:FLOWS", db, synchronous="NORMAL")
    assert isinstance(engine.store, SqliteDurableStore) and engine.store.path == Path(db)
    assert engine.store.synchronous == "NORMAL"
    memory = load_engine("samples.approval.flows:FLOWS", "memory:")
    assert isinstance(memory.store, InMemoryDurableStore)
    with pytest.raises(SystemExit, match=r"--db: .*redis.*streams only"):
        load_engine("samples.approval.flows:FLOWS", "redis://127.0.0.1/0")


def test_memory_and_unknown_schemes() -> None:
    assert isinstance(store_from_url("memory:"), InMemoryDurableStore)
    with pytest.raises(ValueError, match=r"no durable store is installed for mongodb://"):
        store_from_url("mongodb://localhost/x")
    with pytest.raises(InvalidArgumentError, match=r"known schemes: a SQLite path, memory:"):
        open_durable_store("mongodb://localhost/x")
    with pytest.raises(ValueError, match="sqlite:///absolute"):
        store_from_url("sqlite://host/x.db")
    with pytest.raises(ValueError, match="unknown option 'shema'"):
        store_from_url("sqlite:x.db#shema=1")


@pytest.mark.parametrize(
    ("url", "named"), [("redis://127.0.0.1/0", "Redis"), ("https://x.firebaseio.com", "Realtime")]
)
def test_a_stream_only_store_is_no_durable_store(url: str, named: str) -> None:
    # Their plugins keep streams; durable flows need claims and fenced writes.
    with pytest.raises(InvalidArgumentError) as caught:
        open_durable_store(url)
    message = caught.value.message
    assert named in message and "streams only" in message
    assert "pip install stream-gateway-postgres" in message
    assert "pip install stream-gateway-firestore" in message


def test_a_scheme_registered_in_process_opens_its_store() -> None:
    made = InMemoryDurableStore()
    register_durable_store("custom", lambda url: made)
    try:
        assert store_from_url("custom://anything") is made
    finally:
        registered["stream_gateway.durable_stores"].pop("custom")


def test_store_url_schemes_is_deprecated_but_still_adds_a_scheme() -> None:
    import stream_gateway.durable as durable

    made = InMemoryDurableStore()
    with pytest.warns(DeprecationWarning, match="stream_gateway.durable_stores"):
        schemes = durable.STORE_URL_SCHEMES
    schemes["legacy"] = lambda url: made
    try:
        assert store_from_url("legacy://anything") is made
        assert "legacy" in schemes
    finally:
        del schemes["legacy"]
    with pytest.raises(ValueError, match="no durable store is installed for legacy://"):
        store_from_url("legacy://anything")


@pytest.mark.parametrize(
    ("url", "plugin"),
    [
        ("postgresql://app@db/app", "stream-gateway-postgres"),
        ("postgres://app@db/app", "stream-gateway-postgres"),
        ("firestore://project", "stream-gateway-firestore"),
    ],
)
def test_a_plugin_that_is_not_installed_is_named(
    url: str, plugin: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As on a machine where only the core is installed: no plugin's entry points.
    from importlib.metadata import entry_points

    import stream_gateway.stores as stores

    core = [p for p in entry_points(group=stores.DURABLE_STORES) if p.name == "sqlite"]
    monkeypatch.setattr(stores, "entry_points", lambda group: core)
    with pytest.raises(ValueError, match=rf"pip install {plugin}\)"):
        store_from_url(url)
    assert isinstance(store_from_url("x.db"), SqliteDurableStore)
