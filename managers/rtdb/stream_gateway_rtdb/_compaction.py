"""Compaction: a finished stream's batches replaced by one batch of entries.

The REST API takes a condition (``if-match``) on a PUT to one location, never on a
multi-path PATCH, and a stream's meta and batches are two locations. So, in three
requests after reading the meta with its ETag:

1. **Claim**: a conditional PUT of the meta adding ``compacting: <now>``, only if the
   stream is finished, at ``length``, not compacted and not claimed. Two compactions
   of one stream never both pass this.
2. **Mark**: one multi-path PATCH, atomic: ``meta/<id>/compacted``, the claim removed,
   the entries batch written over ``batches/<id>/000000000000`` (marked with ``"k"``)
   and the other batches starting below the entry count deleted (their keys from a
   shallow GET). A reader sees either the old batches there or the entries alone.
3. **Cleanup**: the other batch keys (a shallow GET) deleted by PATCHes of nulls,
   highest offsets first.

A process that dies after the claim leaves a readable, uncompacted stream whose claim
lapses after `CLAIM_LAPSE` seconds (a retry in the same process, after a failed mark,
takes its own claim again at once); one that dies after the mark leaves old batches
that `purge` deletes with the stream (a later `compact` call deletes them too). Until
then reads keep to the entries (see `_read`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Literal

from stream_gateway import InvalidArgumentError, UnavailableError

from ._client import Conflict, RestClient
from ._layout import batch_key, encode_entries

__all__ = ["CLAIM_LAPSE", "check_entries", "claim", "delete_leftovers", "mark"]

#: Seconds after which a claim whose compaction never marked the stream is ignored.
CLAIM_LAPSE = 60.0
_TRIES = 5
_DELETE_ROUND = 500  # batch keys deleted per PATCH


def check_entries(length: int, entries: Sequence[bytes]) -> None:
    """Refuse what `compact` promises never to receive."""
    if not 1 <= len(entries) <= length:
        raise InvalidArgumentError("a compaction stores between 1 and `length` entries")
    if any(b"\n" in entry for entry in entries):
        raise InvalidArgumentError("a compacted entry contains a raw newline")


async def claim(
    client: RestClient, meta_path: str, length: int, *, own: float | None = None
) -> float | Literal[False] | None:
    """Claim the stream for compaction (step 1); return the claim (its time). False
    when the stream may not be compacted; ``None`` when it is compacted already (its
    leftovers may need deleting). ``own`` is a claim this process made earlier for the
    same stream (a compaction whose mark failed): finding it, the claim is taken again."""
    for _ in range(_TRIES):
        current, etag = await client.get_with_etag(meta_path)
        if not isinstance(current, dict) or current.get("status", "open") == "open":
            return False
        if current.get("compacted") is not None:
            return None
        claimed = current.get("compacting")
        lapsed = time.time() - CLAIM_LAPSE
        if isinstance(claimed, int | float) and claimed > lapsed and claimed != own:
            return False  # another compaction is under way
        if current.get("length") != length:
            return False
        now = time.time()
        try:
            await client.put(meta_path, {**current, "compacting": now}, if_match=etag)
        except Conflict:
            continue
        return now
    raise UnavailableError("stream metadata kept changing; the stream was not compacted")


async def mark(client: RestClient, root: str, stream_id: str, entries: Sequence[bytes]) -> None:
    """Record ``compacted``, write the entries over the first batch and delete the
    batches starting below the entry count, atomically (step 2)."""
    keys: Any = await client.get(f"{root}/batches/{stream_id}", shallow=True)
    update: dict[str, Any] = {
        f"batches/{stream_id}/{key}": None
        for key in keys or {}
        if key.isdigit() and 0 < int(key) < len(entries)
    }
    update[f"meta/{stream_id}/compacted"] = len(entries)
    update[f"meta/{stream_id}/compacting"] = None
    update[f"batches/{stream_id}/{batch_key(0)}"] = encode_entries(entries)
    await client.patch(root, update)


async def delete_leftovers(client: RestClient, batches_path: str) -> int:
    """Delete every batch but the entries (step 3), highest first; return how many."""
    keys: Any = await client.get(batches_path, shallow=True)
    doomed = sorted((k for k in keys or {} if k != batch_key(0)), reverse=True)
    for start in range(0, len(doomed), _DELETE_ROUND):
        await client.patch(batches_path, dict.fromkeys(doomed[start : start + _DELETE_ROUND]))
    return len(doomed)
