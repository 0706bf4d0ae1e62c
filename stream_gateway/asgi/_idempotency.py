"""Idempotent starts: one stream, and one run, per (flow, principal, ``Idempotency-Key``)
or per client-chosen stream id.

The stream id is *derived* from the key instead of drawn at random, so that the
backend's "create fails if the id exists" (`StreamStorage.create`) decides, in one
atomic step and across every process sharing the backend, which of several
identical starts runs the flow: no separate key table, no lock. The losers find the
winner's stream and follow it. A digest of the request body is stored in the
stream's record with its creation (``extra``), so a reused key with a different
body is told apart and refused.

A key lives as long as its stream: once the stream has expired, the key cannot be
reused (the id may still be taken until the purge); the client picks a new one.

A client may instead choose the stream id itself (``x-stream-id`` or a ``streamId``
field), so that it can follow the stream even if the start's answer was lost. Such an
id is used as it is; an id that this start cannot have (another principal's or flow's,
another body's, expired) is refused with one and the same answer, which says nothing
about why: whether another principal has a stream under an id is not told.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from .._errors import AlreadyExistsError, InvalidArgumentError
from .._ids import validate_stream_id
from ..streams.base import StreamRecord

__all__ = ["CHOSEN_ID_FIELD", "CHOSEN_ID_HEADER", "IDEMPOTENCY_HEADER", "IdempotentStart"]

IDEMPOTENCY_HEADER = "idempotency-key"
CHOSEN_ID_HEADER = "x-stream-id"
CHOSEN_ID_FIELD = "streamId"
# The shape of the ids derived here and for conversation turns: a chosen id may not
# take it, so that nobody can occupy another principal's keyed start or turn.
_DERIVED = re.compile(r"[ci][A-Za-z0-9_-]{43}")
_TAKEN = "this stream id cannot be used for this start; choose a new one (a random UUID, say)"
# Visible ASCII only; at least 16 characters, because for an anonymous caller the key
# is all that separates its stream from anyone else's (a random UUID is right).
_KEY = re.compile(r"[\x21-\x7e]{16,255}")
_DIGEST_FIELD = "requestDigest"


@dataclass(frozen=True, slots=True)
class IdempotentStart:
    """The stream id and request digest that a keyed start stands for."""

    stream_id: str
    digest: str
    chosen: bool = False  # the client chose the stream id (else it is derived from a key)

    @classmethod
    def of(cls, flow: str, owner: str | None, key: str, body: Any) -> IdempotentStart:
        """Derive the start of ``flow`` by ``owner`` (a principal hash) under ``key``.

        Raises `InvalidArgumentError` for a malformed key (without echoing it).
        """
        if not _KEY.fullmatch(key):
            raise InvalidArgumentError(
                "malformed Idempotency-Key: expected 16-255 visible ASCII characters"
                " (a random UUID, say)"
            )
        material = "\0".join(["stream-gateway/idempotent-start", flow, owner or "", key])
        digest = hashlib.sha256(material.encode()).digest()
        # "i" + 43 url-safe characters: a valid stream id, never of the form __...__.
        stream_id = "i" + base64.urlsafe_b64encode(digest).decode().rstrip("=")
        return cls(stream_id, _digest(body))

    @classmethod
    def chosen_by_client(cls, stream_id: object, body: Any) -> IdempotentStart:
        """The start of a stream whose id the client chose (``stream_id``, validated).

        Raises `InvalidArgumentError` for a malformed id or one of the shape the
        gateway derives ids in (without echoing it).
        """
        chosen = validate_stream_id(stream_id)
        if _DERIVED.fullmatch(chosen):
            raise InvalidArgumentError(
                "stream ids of 44 characters starting with 'c' or 'i' are kept for the"
                " gateway's own; choose another (a random UUID, say)"
            )
        return cls(chosen, _digest(body), chosen=True)

    @property
    def extra(self) -> dict[str, Any]:
        """What to store in the stream's record when creating it."""
        return {_DIGEST_FIELD: self.digest}

    def check(self, record: StreamRecord) -> None:
        """Raise `AlreadyExistsError` (409) if ``record`` was started by another request."""
        if record.extra.get(_DIGEST_FIELD) != self.digest:
            if self.chosen:
                raise self.unusable()
            raise AlreadyExistsError(
                "this Idempotency-Key was already used with a different request;"
                " use a new key for a new request",
                details={"streamId": record.stream_id},
            )

    def unusable(self) -> AlreadyExistsError:
        """The error for a start whose stream id exists but is not this start's to
        follow (expired, another principal's or flow's): the same for every reason."""
        if self.chosen:
            return AlreadyExistsError(_TAKEN)
        return AlreadyExistsError(
            "this Idempotency-Key belongs to an expired stream; use a new key"
        )


def _digest(body: Any) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()
