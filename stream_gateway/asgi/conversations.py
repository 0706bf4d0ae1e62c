"""Conversations: at most one active run per (flow, principal, conversation id).

A conversation is a sequence of *turns*, each a stream whose id is derived from
(flow, owner, conversation, turn number). Like idempotent starts, this needs no
table of its own: the backend's atomic create (`StreamStorage.create`) lets exactly
one start take turn ``n + 1``, in any process, and the active run is found by
looking the turns up. Turns are found from the first one on (a galloping search), so
a conversation lives as long as its first turn's stream: once that has expired (the
manager's ``ttl`` after it ended), the same conversation id starts afresh at turn 0.
"""

from __future__ import annotations

import base64
import hashlib
import re

from .._errors import InvalidArgumentError, StreamNotFoundError
from ..streams.base import StreamRecord
from ..streams.manager import StreamManager
from ._idempotency import IdempotentStart

__all__ = ["CONVERSATION_HEADER", "Conversation"]

CONVERSATION_HEADER = "x-conversation-id"
_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_TURN_FIELD = "turn"
_KEY_FIELD = "startKey"
_MAX_TURNS = 1 << 40


def validate_conversation_id(value: object) -> str:
    """Return ``value`` if it is 1-128 characters of ``[A-Za-z0-9_.:-]``; else raise
    `InvalidArgumentError` without echoing it."""
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise InvalidArgumentError(
            "malformed conversation id: expected 1-128 characters of"
            " A-Z, a-z, 0-9, '_', '.', ':' or '-'"
        )
    return value


class Conversation:
    """One conversation of one principal (``owner``, a hash) on one flow."""

    def __init__(
        self, manager: StreamManager, flow: str, owner: str | None, conversation_id: str
    ) -> None:
        self.manager = manager
        self.flow = flow
        self.owner = owner
        self.id = validate_conversation_id(conversation_id)

    def turn_id(self, turn: int) -> str:
        """The stream id of turn ``turn``: unguessable without the conversation id."""
        material = "\0".join(
            ["stream-gateway/conversation", self.flow, self.owner or "", self.id, str(turn)]
        )
        digest = hashlib.sha256(material.encode()).digest()
        return "c" + base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def extra(self, turn: int, start_key: str | None) -> dict[str, object]:
        """What a turn's record carries (``start_key``: its idempotent start, if any)."""
        extra: dict[str, object] = {"conversation": self.id, _TURN_FIELD: turn}
        if start_key is not None:
            extra[_KEY_FIELD] = start_key
        return extra

    @staticmethod
    def turn_of(record: StreamRecord) -> int:
        """The turn number a turn's record carries."""
        return int(record.extra[_TURN_FIELD])

    @staticmethod
    def started_by(record: StreamRecord, start: IdempotentStart) -> bool:
        """Whether the turn was started under ``start``'s key."""
        return record.extra.get(_KEY_FIELD) == start.stream_id

    async def _load(self, turn: int) -> StreamRecord | None:
        record = await self.manager.storage.load(self.turn_id(turn))
        if record is None or record.flow != self.flow or record.owner != self.owner:
            return None
        return record

    async def latest(self) -> StreamRecord | None:
        """The last turn's record (finished or not), or None before the first turn."""
        first = await self._load(0)
        if first is None:
            return None
        known, step = 0, 1
        record = first
        # Gallop: turns exist densely from 0, so double until one is missing...
        while known + step < _MAX_TURNS:
            found = await self._load(known + step)
            if found is None:
                break
            known, record, step = known + step, found, step * 2
        # ...then bisect between the last found and the first missing.
        missing = known + step
        while missing - known > 1:
            middle = (known + missing) // 2
            found = await self._load(middle)
            if found is None:
                missing = middle
            else:
                known, record = middle, found
        return record

    def is_active(self, record: StreamRecord) -> bool:
        """Whether the turn is still running (open, its writer alive, not expired)."""
        return (
            record.status == "open"
            and not self.manager.is_abandoned(record)
            and record.expires_at > self.manager.clock()
        )

    async def active(self) -> StreamRecord | None:
        """The running turn's record, or None when no turn is running."""
        record = await self.latest()
        return record if record is not None and self.is_active(record) else None

    async def wait_until_ended(self, record: StreamRecord) -> None:
        """Return once the turn's stream has its terminal entry (or was abandoned)."""
        try:
            await self.manager.end_of(record.stream_id)
        except StreamNotFoundError:
            pass  # expired meanwhile: long over
