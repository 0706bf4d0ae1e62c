"""Flow (execution) ids: random when made, derived when they must be idempotent,
always checked before they reach a store."""

from __future__ import annotations

import base64
import hashlib
import re

from .._errors import InvalidArgumentError
from .._ids import new_stream_id

__all__ = ["derive_flow_id", "new_flow_id", "validate_flow_id"]

_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,128}")


def new_flow_id() -> str:
    """A fresh id: 132 random bits, 22 url-safe characters."""
    return new_stream_id()


def derive_flow_id(*parts: str | None) -> str:
    """A stable id for ``parts`` (an idempotency key with its flow and owner, or a
    parent execution and step key): 22 url-safe characters of a SHA-256."""
    digest = hashlib.sha256("\x1f".join(p or "" for p in parts).encode()).digest()
    return base64.urlsafe_b64encode(digest).decode()[:22]


def validate_flow_id(flow_id: object) -> str:
    """Return ``flow_id`` if it is 1-128 characters of ``[A-Za-z0-9_-]``.

    Raises `InvalidArgumentError` otherwise, without echoing the rejected value.
    """
    if not isinstance(flow_id, str) or not _PATTERN.fullmatch(flow_id):
        raise InvalidArgumentError(
            "malformed flow id: expected 1-128 characters of A-Z, a-z, 0-9, '_' or '-'"
        )
    return flow_id
