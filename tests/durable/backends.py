"""Durable stores the durable suites run against, by name.

Each entry makes a `DurableHarness`: a factory of fresh stores that all see the same
data (as processes sharing a database do), and where that data is for another process.
A store whose server is missing fails its tests loudly; nothing here skips. A plugin's
store joins every contract test by adding one entry to `DURABLE_BACKENDS`.

Which tests run where:

- the store contract (``test_durable_store*.py``), the restart-at-every-call test and
  the recurring schedules' tests run against every selected store
  (``DURABLE_BACKENDS=memory,postgres`` narrows it);
- the engine's own tests run against the embedded stores (memory, SQLite) only, as the
  engine's behaviour does not depend on the store once the contract holds.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from stream_gateway.durable import DurableStore, InMemoryDurableStore, SqliteDurableStore


@dataclass
class DurableHarness:
    """``new_store()`` returns a store on the same data as every other one made here.

    ``location`` tells another process where that data is: a SQLite path, a Postgres
    DSN, a Firestore project; empty for memory. ``embedded`` stores run the engine's
    own tests too. ``notifies``: its `DurableStore.watch_due` wakes workers (else it
    returns at once and workers poll).
    """

    name: str
    new_store: Callable[[], DurableStore]
    location: str = ""
    embedded: bool = False
    notifies: bool = False


@asynccontextmanager
async def memory_store() -> AsyncIterator[DurableHarness]:
    shared = InMemoryDurableStore()
    yield DurableHarness("memory", lambda: shared, embedded=True)


@asynccontextmanager
async def sqlite_store() -> AsyncIterator[DurableHarness]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "durable.sqlite3"
        yield DurableHarness("sqlite", lambda: SqliteDurableStore(path), str(path), embedded=True)


@asynccontextmanager
async def firestore_store() -> AsyncIterator[DurableHarness]:
    # Imported here: the plugin (and Google's SDK) only when its tests run.
    from stream_gateway_firestore import FirestoreDurableStore
    from stream_gateway_firestore.testing import shared_emulator

    emulator = shared_emulator()
    # Collections of this test's own: no test sees another's data, none is wiped.
    prefix = f"t{secrets.token_hex(5)}"
    location = f"firestore://{emulator.project}#prefix={prefix}"
    yield DurableHarness(
        "firestore",
        lambda: FirestoreDurableStore.from_url(location, rpc_timeout=30.0),
        location,
        notifies=True,
    )


@asynccontextmanager
async def postgres_store() -> AsyncIterator[DurableHarness]:
    """The PostgreSQL at ``POSTGRES_DSN``, else one started once per test process (a
    missing server fails loudly). Each test gets a schema of its own, dropped after;
    ``location`` is the DSN with ``#schema=<name>`` (`PostgresDurableStore.from_url`)."""
    from stream_gateway_postgres import PostgresDurableStore
    from stream_gateway_postgres.testing import drop_schema, new_schema, shared_server

    server = shared_server()
    schema = new_schema()
    try:
        yield DurableHarness(
            "postgres",
            lambda: PostgresDurableStore(server.dsn, schema=schema, max_connections=4),
            f"{server.dsn}#schema={schema}",
            notifies=True,
        )
    finally:
        await drop_schema(server.dsn, schema)


DURABLE_BACKENDS: dict[str, Callable[[], AbstractAsyncContextManager[DurableHarness]]] = {
    "memory": memory_store,
    "sqlite": sqlite_store,
    "firestore": firestore_store,
    "postgres": postgres_store,
}

EMBEDDED = ("memory", "sqlite")


def selected_durable_backends() -> list[str]:
    """All stores, or those named in ``DURABLE_BACKENDS`` (comma-separated)."""
    wanted = os.environ.get("DURABLE_BACKENDS")
    if not wanted:
        return list(DURABLE_BACKENDS)
    names = [n.strip() for n in wanted.split(",") if n.strip()]
    unknown = set(names) - set(DURABLE_BACKENDS)
    if unknown:
        raise RuntimeError(f"DURABLE_BACKENDS names unknown stores: {sorted(unknown)}")
    return names


def backends_for(module: str) -> list[str]:
    """The stores a test module runs against: every selected one for the contract
    modules, the selected embedded ones for the rest."""
    selected = selected_durable_backends()
    name = module.rsplit(".", 1)[-1]
    if name.startswith("test_durable_store") or name in CONTRACT_MODULES:
        return selected
    return [n for n in selected if n in EMBEDDED]


#: Engine-level modules that also run against every store: end-to-end proof that a
#: store honours the contract under a real flow.
CONTRACT_MODULES = {"test_durable_v2_restarts", "test_durable_schedules"}
