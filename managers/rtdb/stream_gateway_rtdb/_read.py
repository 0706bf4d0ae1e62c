"""Reading chunk batches: only those at or after an offset, in as few requests as can be.

``read(offset)`` asks for ``orderBy="$key"&startAt=<offset's key>&limitToFirst=k``. When a
batch starts exactly at ``offset`` (the usual case: a reader goes on where the last
batch ended) that is all. Otherwise ``offset`` may fall inside the batch before, and one
more query, ``endAt=<offset's key>&limitToLast=1``, fetches just that batch. ``k`` is
sized from the batches seen so far, so that a read brings about ``limit`` chunks.

While a compaction deletes the old batches (or after one that died before deleting
them), a read may meet old batches and the entries batch together: once it sees the
entries, it keeps them alone, so that it never returns old chunks and entries together.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

from ._client import RestClient
from ._layout import batch_key, decode_batch, is_entries

__all__ = ["BatchReader"]

_MAX_BATCHES_PER_READ = 100
_KNOWN_ENDS = 4096  # streams whose last read end is remembered

Batch = tuple[int, list[bytes]]


class BatchReader:
    """Reads batches; remembers, per stream, where the last read ended a batch."""

    def __init__(self) -> None:
        self._known_ends: OrderedDict[str, int] = OrderedDict()
        self._batch_size_hint = 16.0

    async def read(
        self, client: RestClient, path: str, stream_id: str, offset: int, limit: int
    ) -> list[bytes]:
        """Up to ``limit`` chunks from ``offset`` on, of the batches at ``path``."""
        count = max(1, min(_MAX_BATCHES_PER_READ, math.ceil(limit / self._batch_size_hint) + 1))
        key = batch_key(offset)
        found = await client.get(path, orderBy="$key", startAt=key, limitToFirst=count)
        batches = _batches_in(found)
        if batches and batches[0][0] == offset:
            pass  # ``offset`` starts a batch: nothing before it is needed
        elif not batches and self._known_ends.pop(stream_id, None) == offset:
            return []  # the last read ended a batch here, and nothing came since
        elif offset > 0:
            # ``offset`` may fall inside the batch before: fetch just that one.
            holding = await client.get(path, orderBy="$key", endAt=key, limitToLast=1)
            batches = _batches_in(holding, found)
        if not batches:
            return []
        self._batch_size_hint = max(1.0, sum(len(c) for _, c in batches) / len(batches))
        chunks = _slice(batches, offset, limit)
        end = offset + len(chunks)
        if chunks and any(first + len(c) == end for first, c in batches):
            self._remember_end(stream_id, end)
        return chunks

    async def last_end(self, client: RestClient, path: str) -> int:
        """The offset just past the last batch at ``path`` (0 when there is none)."""
        last = await client.get(path, orderBy="$key", limitToLast=1)
        return max((o + len(c) for o, c in _batches_in(last)), default=0)

    def _remember_end(self, stream_id: str, end: int) -> None:
        self._known_ends[stream_id] = end
        self._known_ends.move_to_end(stream_id)
        while len(self._known_ends) > _KNOWN_ENDS:
            self._known_ends.popitem(last=False)


def _batches_in(*results: Any) -> list[Batch]:
    """The batches of query results (unordered objects), by offset; only the entries
    batch if one of them is a compacted stream's."""
    values = [v for result in results if isinstance(result, dict) for v in result.values()]
    if any(map(is_entries, values)):
        values = [v for v in values if is_entries(v)]
    batches = [b for b in map(decode_batch, values) if b is not None]
    return sorted(batches, key=lambda batch: batch[0])


def _slice(batches: list[Batch], offset: int, limit: int) -> list[bytes]:
    """Up to ``limit`` chunks from ``offset`` on, from contiguous batches only."""
    chunks: list[bytes] = []
    for first, batch in batches:
        position = offset + len(chunks)
        if first > position:
            break  # a gap (never written so); stop at what is contiguous
        if first + len(batch) > position:
            chunks.extend(batch[position - first : position - first + limit - len(chunks)])
        if len(chunks) >= limit:
            break
    return chunks
