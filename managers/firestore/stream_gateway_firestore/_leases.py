"""Writes to stream records that race other processes: lease renewals and cancel flags.

Both read first and write with a ``last_update_time`` precondition, retrying when the
record changed in between, so a renewal never revives a finished stream and never
clears a cancellation it did not see.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud.firestore_v1 import AsyncClient, AsyncDocumentReference

from stream_gateway import UnavailableError

from ._google import translated
from ._layout import WRITES_PER_COMMIT

__all__ = ["finish_open", "flag_cancel", "renew_leases"]

_ATTEMPTS = 5
_Write = tuple[AsyncDocumentReference, dict[str, Any], Any]


async def renew_leases(
    client: AsyncClient,
    records: Sequence[AsyncDocumentReference],
    changes: Mapping[str, Any],
    lengths: Mapping[str, int],
    *,
    rpc_timeout: float,
) -> set[str]:
    """Apply ``changes`` to the records still open, in batched writes.

    ``lengths`` are committed lengths known locally; a stored length behind one is
    refreshed in the same write. Returns the ids whose cancellation was requested and
    those no longer open (finished elsewhere, or gone).
    One ``get_all`` and one commit in the usual case.
    """
    for _ in range(_ATTEMPTS):
        with translated("renewing leases"):
            snaps = [
                s async for s in client.get_all(list(records), retry=None, timeout=rpc_timeout)
            ]
        cancelled: set[str] = set()
        writes: list[_Write] = []
        for snap in snaps:
            fields = snap.to_dict() or {}
            if fields.get("status") != "open":
                cancelled.add(snap.id)  # finished elsewhere (abandoned) or gone: stop it
                continue
            update = dict(changes)
            if lengths.get(snap.id, 0) > int(fields.get("length") or 0):
                update["length"] = lengths[snap.id]
            guard = client.write_option(last_update_time=snap.update_time)
            writes.append((snap.reference, update, guard))
            if fields.get("cancel_requested") or fields.get("stop_requested"):
                cancelled.add(snap.id)
        try:
            await _commit(client, writes, rpc_timeout=rpc_timeout)
        except gexc.FailedPrecondition:
            continue  # a record changed between our read and our write: read again
        return cancelled
    raise UnavailableError("lease renewal kept racing other writes to the stream records")


async def _commit(client: AsyncClient, writes: list[_Write], *, rpc_timeout: float) -> None:
    for start in range(0, len(writes), WRITES_PER_COMMIT):
        batch = client.batch()
        for ref, update, guard in writes[start : start + WRITES_PER_COMMIT]:
            batch.update(ref, update, option=guard)
        with translated("renewing leases"):
            await batch.commit(retry=None, timeout=rpc_timeout)


async def flag_cancel(
    client: AsyncClient,
    record: AsyncDocumentReference,
    *,
    rpc_timeout: float,
    flag: str = "cancel_requested",
) -> bool:
    """Set ``flag`` (``cancel_requested``, or ``stop_requested``) on an open stream;
    False if unknown or finished."""
    for _ in range(_ATTEMPTS):
        with translated("loading a stream"):
            snap = await record.get(retry=None, timeout=rpc_timeout)
        fields = snap.to_dict() or {}
        if fields.get("status") != "open":
            return False
        if fields.get(flag):
            return True
        guard = client.write_option(last_update_time=snap.update_time)
        try:
            with translated("requesting cancellation"):
                await record.update({flag: True}, option=guard, retry=None, timeout=rpc_timeout)
        except gexc.FailedPrecondition:
            continue  # the record changed meanwhile (renewed, finished): look again
        return True
    raise UnavailableError("cancellation kept racing other writes to the stream record")


async def finish_open(
    client: AsyncClient,
    record: AsyncDocumentReference,
    fields: Callable[[dict[str, Any]], dict[str, Any] | Awaitable[dict[str, Any] | None] | None],
    *,
    rpc_timeout: float,
) -> bool | None:
    """Apply ``fields(stored)`` to the record if it is still open, atomically.

    ``fields`` sees the stored fields and returns the update, or ``None`` to leave
    the record alone. Returns True when written, False when the record is finished
    (or ``fields`` declined), ``None`` when it does not exist.
    """
    for _ in range(_ATTEMPTS):
        with translated("loading a stream"):
            snap = await record.get(retry=None, timeout=rpc_timeout)
        if not snap.exists:
            return None
        stored = snap.to_dict() or {}
        if stored.get("status") != "open":
            return False
        update = fields(stored)
        if inspect.isawaitable(update):
            update = await update
        if update is None:
            return False
        guard = client.write_option(last_update_time=snap.update_time)
        try:
            with translated("finishing a stream"):
                await record.update(update, option=guard, retry=None, timeout=rpc_timeout)
        except gexc.FailedPrecondition:
            continue  # the record changed meanwhile (renewed, finished): look again
        return True
    raise UnavailableError("finishing kept racing other writes to the stream record")
