"""`BatchCache`: the batches a blocking read of this process has already received.

The watch of a stream (one ``XREAD BLOCK`` loop per stream per process) receives every
new batch anyway; keeping a bounded window of them lets the subscribers' next reads be
answered without a round trip, however many subscribers wake at once.
"""

from __future__ import annotations

import bisect
from collections import deque

__all__ = ["BatchCache"]


class BatchCache:
    """Contiguous batches ``(first offset, chunks)``, the oldest dropped past ``max_chunks``."""

    def __init__(self, max_chunks: int = 4096, end: int | None = None) -> None:
        self.max_chunks = max_chunks
        self._firsts: deque[int] = deque()
        self._batches: deque[list[bytes]] = deque()
        self._held = 0
        self._end = end
        #: The longest length a `load` has reported: more than `end` means the blocking
        #: read has not yet brought everything committed.
        self.loaded_length = 0

    @property
    def end(self) -> int | None:
        """The offset just past the last batch received, or where the watch began."""
        if not self._firsts:
            return self._end
        return self._firsts[-1] + len(self._batches[-1])

    def is_current_at(self, offset: int) -> bool:
        """True when ``offset`` is the end of what the watch received and no `load` has
        seen more: a read there would come back empty."""
        return offset == self.end and self.loaded_length <= offset

    def add(self, first: int, chunks: list[bytes]) -> None:
        """Hold a batch; one that does not follow the last one restarts the window."""
        if self._firsts and self.end != first:
            self.clear()
        self._firsts.append(first)
        self._batches.append(chunks)
        self._held += len(chunks)
        while self._held > self.max_chunks and len(self._firsts) > 1:
            self._firsts.popleft()
            self._held -= len(self._batches.popleft())

    def clear(self) -> None:
        """Drop every batch held."""
        self._firsts.clear()
        self._batches.clear()
        self._held = 0

    def read(self, offset: int, limit: int) -> list[bytes]:
        """Up to ``limit`` chunks from ``offset`` if the window holds it, else ``[]``."""
        end = self.end
        if not self._firsts or end is None or not self._firsts[0] <= offset < end:
            return []
        index = bisect.bisect_right(self._firsts, offset) - 1
        out: list[bytes] = []
        skip = offset - self._firsts[index]
        while len(out) < limit and index < len(self._batches):
            out.extend(self._batches[index][skip : skip + limit - len(out)])
            skip = 0
            index += 1
        return out
