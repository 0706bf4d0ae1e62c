"""Opening what ``--store`` names, for one command, and how records look when printed."""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio

from .._errors import InvalidArgumentError, UnavailableError
from .._json import loads
from ..durable.engine import DurableEngine
from ..stores import StoreURL, open_durable_store, open_stream_storage, parse_store_url
from ..streams.base import StreamRecord
from ..streams.manager import StreamManager

__all__ = ["engine_for", "manager_for", "record_json", "store_url"]


def store_url(text: str | None, *, must_exist: bool = True, kind: str | None = None) -> StoreURL:
    """The parsed ``--store``. A SQLite file must exist (a typo must not create one),
    unless ``must_exist`` is false (a worker creates its store); with ``kind``
    (``"streams"`` or ``"durable"``), a SQLite file of the other kind is refused with
    a message that says so."""
    if not text:
        raise InvalidArgumentError(
            "no store given: pass --store URL or set STREAM_GATEWAY_STORE"
            " (a SQLite file path, postgresql://..., firestore://<project>, redis://...,"
            " or a Realtime Database https:// URL)"
        )
    url = parse_store_url(text)
    if must_exist and url.scheme == "sqlite" and not os.path.isfile(url.location):
        raise InvalidArgumentError(f"no SQLite file at {url.location!r}")
    if kind is not None and url.scheme == "sqlite" and os.path.isfile(url.location):
        _check_sqlite_kind(url.location, kind)
    return url


# What each kind of file holds: a table only it has, and how to say so.
_KINDS = {
    "streams": ("batches", "streams", "streams commands need the stream store's file"),
    "durable": (
        "executions",
        "durable executions",
        "flows and schedules commands need the durable store's file",
    ),
}


def _check_sqlite_kind(path: str, kind: str) -> None:
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    except sqlite3.Error as exc:
        raise InvalidArgumentError(f"{path} is not a SQLite database: {exc}") from None
    mark, holds, needed = _KINDS[kind]
    (other_mark, other_holds, _) = _KINDS["durable" if kind == "streams" else "streams"]
    if other_mark in tables and mark not in tables:
        raise InvalidArgumentError(f"{path} holds {other_holds}, not {holds}: {needed}")


@asynccontextmanager
async def manager_for(text: str | None, *, patience: float) -> AsyncIterator[StreamManager]:
    """A started `StreamManager` on the stream store ``--store`` names.

    It never purges by itself (``streams purge`` does, when asked), and gives up on a
    store that does not answer within ``patience`` seconds.
    """
    storage = open_stream_storage(store_url(text, kind="streams"))
    manager = StreamManager(storage, write_retry_for=patience, purge_interval=math.inf)
    async with manager:
        yield manager


@asynccontextmanager
async def engine_for(
    text: str | None, *, patience: float, flows: str | None = None
) -> AsyncIterator[DurableEngine]:
    """A started `DurableEngine` on the durable store ``--store`` names, with the flows
    ``--flows`` names (none by default: operating the store needs no flow code). The
    command must be done within ``patience`` seconds (`UnavailableError` if not)."""
    from ..durable.cli import load_engine

    url = store_url(text, kind="durable")
    store = open_durable_store(url)
    if flows is not None:
        engine = load_engine(flows, None)
        engine.store = store
    else:
        engine = DurableEngine([], store=store)
    try:
        with anyio.fail_after(patience):
            async with engine:
                yield engine
    except TimeoutError:
        raise UnavailableError(f"the durable store did not answer within {patience:g}s") from None


def record_json(record: StreamRecord, *, abandoned: bool = False) -> dict[str, Any]:
    """A stream record as the command line prints it with ``--json``."""
    body: dict[str, Any] = {
        "id": record.stream_id,
        "flow": record.flow,
        "status": record.status,
        "length": record.length,
        "owner": record.owner,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "expires_at": record.expires_at,
        "lease_until": record.lease_until,
        "cancel_requested": record.cancel_requested,
        "stop_requested": record.stop_requested,
        "abandoned": abandoned,
        "compacted": record.compacted,
    }
    terminal = record.terminal
    if terminal is not None:
        if terminal.kind == "done":
            body["result"] = loads(terminal.payload)
        else:
            body["error"] = loads(terminal.payload)
    if record.extra:
        body["extra"] = record.extra
    return body
