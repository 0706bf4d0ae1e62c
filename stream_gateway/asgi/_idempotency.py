"""Idempotent starts: one stream, and one run, per (flow, principal, ``Idempotency-Key``).

The stream id is *derived* from the key instead of drawn at random, so that the
backend's "create fails if the id exists" (`StreamStorage.create`) decides, in one
atomic step and across every process sharing the backend, which of several
identical starts runs the flow: no separate key table, no lock. The losers find the
winner's stream and follow it. A digest of the request body is stored in the
stream's record with its creation (``extra``), so a reused key with a different
body is told apart and refused.

A key lives as long as its stream: once the stream has expired, the key cannot be
reused (the id may still be taken until the purge); the client picks a new one.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from .._errors import AlreadyExistsError, InvalidArgumentError
from ..streams.base import StreamRecord

__all__ = ["IDEMPOTENCY_HEADER", "IdempotentStart"]

IDEMPOTENCY_HEADER = "idempotency-key"
# Visible ASCII only; at least 16 characters, because for an anonymous caller the key
# is all that separates its stream from anyone else's (a random UUID is right).
_KEY = re.compile(r"[\x21-\x7e]{16,255}")
_DIGEST_FIELD = "requestDigest"


@dataclass(frozen=True, slots=True)
class IdempotentStart:
    """The stream id and request digest that a keyed start stands for."""

    stream_id: str
    digest: str

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
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return cls(stream_id, hashlib.sha256(canonical.encode()).hexdigest())

    @property
    def extra(self) -> dict[str, Any]:
        """What to store in the stream's record when creating it."""
        return {_DIGEST_FIELD: self.digest}

    def check(self, record: StreamRecord) -> None:
        """Raise `AlreadyExistsError` (409) if ``record`` was started by another request."""
        if record.extra.get(_DIGEST_FIELD) != self.digest:
            raise AlreadyExistsError(
                "this Idempotency-Key was already used with a different request;"
                " use a new key for a new request",
                details={"streamId": record.stream_id},
            )
