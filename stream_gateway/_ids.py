"""Stream ids: unguessable when made, checked before they touch a backend key or path."""

from __future__ import annotations

import hashlib
import re
import secrets

from ._errors import InvalidArgumentError

__all__ = ["new_stream_id", "owner_key", "validate_stream_id"]

# 22 url-safe base64 characters carry 132 random bits (the design asks for >= 122).
_ID_BYTES = 17
_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,128}")
# Firestore reserves document ids of the form __.*__.
_RESERVED = re.compile(r"__.*__")


def new_stream_id() -> str:
    """A fresh id: 132 random bits, url-safe, usable as a document id or database key."""
    while True:
        stream_id = secrets.token_urlsafe(_ID_BYTES)[:22]
        if not _RESERVED.fullmatch(stream_id):
            return stream_id


def validate_stream_id(stream_id: object) -> str:
    """Return ``stream_id`` if it is 16-128 characters of ``[A-Za-z0-9_-]``, not of the
    form ``__...__``.

    That keeps ids safe as Firestore document ids (which reserve ``__.*__``), RTDB
    keys (which forbid ``. $ # [ ] /``), URL path segments and SQL parameters alike.
    Raises `InvalidArgumentError` otherwise, without echoing the rejected value.
    """
    if (
        not isinstance(stream_id, str)
        or not _ID_PATTERN.fullmatch(stream_id)
        or _RESERVED.fullmatch(stream_id)
    ):
        raise InvalidArgumentError(
            "malformed stream id: expected 16-128 characters of A-Z, a-z, 0-9, '_' or '-',"
            " not starting and ending with '__'"
        )
    return stream_id


def owner_key(principal: str | None) -> str | None:
    """The value stored as a stream's owner: a SHA-256 of the principal, never the principal."""
    if principal is None:
        return None
    return hashlib.sha256(principal.encode()).hexdigest()
