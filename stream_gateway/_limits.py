"""Limits checked once, above every backend."""

from __future__ import annotations

from ._errors import InvalidArgumentError, ResourceExhaustedError

__all__ = ["check_chunk"]


def check_chunk(raw: bytes, count: int, max_chunk_bytes: int, max_chunks: int) -> None:
    """Raise `ResourceExhaustedError` if a chunk or its stream exceeds its limit, and
    `InvalidArgumentError` for a raw newline (stores pack batches on newlines).

    ``count`` is how many chunks the stream holds before this one.
    """
    if b"\n" in raw:
        raise InvalidArgumentError("a chunk must be compact JSON (no raw newline)")
    if len(raw) > max_chunk_bytes:
        raise ResourceExhaustedError(
            f"chunk of {len(raw)} bytes exceeds the limit of {max_chunk_bytes}",
            details={"limit": max_chunk_bytes, "size": len(raw)},
        )
    if count >= max_chunks:
        raise ResourceExhaustedError(
            f"stream exceeds the limit of {max_chunks} chunks", details={"limit": max_chunks}
        )
