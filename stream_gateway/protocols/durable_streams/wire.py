"""Headers, offsets, cursors and content types of the Durable Streams protocol.

Offsets on the wire are our dense chunk offsets written as ``0000000000000000_NNN...``
(two fields of 16 decimal digits, the first always zero), so they sort
lexicographically as the protocol asks, never collide with its two sentinels, ``-1``
(the start) and ``now`` (the tail), and read like the reference server's offsets,
which clients and the conformance suite sometimes write out by hand.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Mapping
from datetime import datetime

from starlette.responses import Response

__all__ = [
    "CLOSED",
    "CURSOR",
    "DS_FLOW",
    "EXPOSED_HEADERS",
    "EXPIRES_AT",
    "NEXT_OFFSET",
    "PRODUCER_EPOCH",
    "PRODUCER_EXPECTED_SEQ",
    "PRODUCER_ID",
    "PRODUCER_RECEIVED_SEQ",
    "PRODUCER_SEQ",
    "SEQ",
    "TTL",
    "UP_TO_DATE",
    "ProtocolError",
    "base_type",
    "format_offset",
    "is_json",
    "is_text",
    "next_cursor",
    "parse_count",
    "parse_expires_at",
    "parse_offset",
    "parse_ttl",
    "protocol_response",
    "wants_close",
]

#: The flow name recorded on the manager's streams that this protocol created.
DS_FLOW = "@durable-streams"

NEXT_OFFSET = "Stream-Next-Offset"
UP_TO_DATE = "Stream-Up-To-Date"
CLOSED = "Stream-Closed"
CURSOR = "Stream-Cursor"
TTL = "Stream-TTL"
EXPIRES_AT = "Stream-Expires-At"
SEQ = "Stream-Seq"
PRODUCER_ID = "Producer-Id"
PRODUCER_EPOCH = "Producer-Epoch"
PRODUCER_SEQ = "Producer-Seq"
PRODUCER_EXPECTED_SEQ = "Producer-Expected-Seq"
PRODUCER_RECEIVED_SEQ = "Producer-Received-Seq"

#: Response headers a browser page may read (for CORS).
EXPOSED_HEADERS = [
    NEXT_OFFSET, UP_TO_DATE, CLOSED, CURSOR, TTL, EXPIRES_AT, PRODUCER_EPOCH, PRODUCER_SEQ,
    PRODUCER_EXPECTED_SEQ, PRODUCER_RECEIVED_SEQ, "Stream-SSE-Data-Encoding", "ETag", "Location",
]  # fmt: skip

#: Headers every answer carries (the protocol's browser security advice).
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Resource-Policy": "cross-origin",
}

_OFFSET = re.compile(r"0{16}_([0-9]{16})")
_TTL = re.compile(r"0|[1-9][0-9]{0,11}")
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
_MAX_INT = 2**53 - 1
# The protocol's cursor epoch (2024-10-09T00:00:00Z) and interval.
_CURSOR_EPOCH = 1728432000
_CURSOR_INTERVAL = 20


class ProtocolError(Exception):
    """An answer other than success: a status, a short message and protocol headers."""

    def __init__(
        self, status: int, message: str = "", headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})

    def response(self) -> Response:
        """The answer as plain text (clients read the status and headers, not the body)."""
        return protocol_response(self.message.encode(), self.status, self.headers, "text/plain")


def protocol_response(
    body: bytes,
    status: int,
    headers: Mapping[str, str],
    media_type: str | None,
) -> Response:
    """A response with the security headers; a 204 or 304 never carries a body."""
    if status in (204, 304):
        body, media_type = b"", None
    response = Response(body, status_code=status, headers={**SECURITY_HEADERS, **headers})
    if media_type is not None:
        response.headers["content-type"] = media_type
    return response


def format_offset(offset: int) -> str:
    """Our dense offset as the protocol's opaque, sortable token."""
    return f"0000000000000000_{offset:016d}"


def parse_offset(value: str | None) -> int | None:
    """``None`` for ``now``, 0 for ``-1`` or no offset, else the offset we issued.

    Raises a 400 `ProtocolError` for anything else.
    """
    if value is None or value == "-1":
        return 0
    if value == "now":
        return None
    match = _OFFSET.fullmatch(value)
    if match is None:
        raise ProtocolError(400, "malformed offset")
    return int(match[1])


def parse_ttl(value: str | None) -> int | None:
    """Seconds from ``Stream-TTL``: a plain non-negative decimal integer, or 400."""
    if value is None:
        return None
    if not _TTL.fullmatch(value):
        raise ProtocolError(400, "Stream-TTL must be a non-negative integer of seconds")
    return int(value)


def parse_expires_at(value: str | None) -> float | None:
    """Unix seconds from an RFC 3339 ``Stream-Expires-At``, or 400."""
    if value is None:
        return None
    if not _RFC3339.fullmatch(value):
        raise ProtocolError(400, "Stream-Expires-At must be an RFC 3339 timestamp")
    try:
        return datetime.fromisoformat(value.upper().replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise ProtocolError(400, "Stream-Expires-At is not a valid time") from None


def parse_count(value: str, name: str) -> int:
    """A producer epoch or sequence: a non-negative integer up to 2**53 - 1, or 400."""
    if not (value.isascii() and value.isdigit()) or int(value) > _MAX_INT:
        raise ProtocolError(400, f"{name} must be a non-negative integer")
    return int(value)


def wants_close(value: str | None) -> bool:
    """``Stream-Closed`` counts only when it is ``true`` (any case)."""
    return value is not None and value.strip().lower() == "true"


def base_type(content_type: str | None) -> str:
    """The media type without parameters, lower-cased (``""`` when absent)."""
    return (content_type or "").split(";")[0].strip().lower()


def is_json(content_type: str) -> bool:
    """JSON mode: messages keep their boundaries and reads answer a JSON array."""
    return base_type(content_type) == "application/json"


def is_text(content_type: str) -> bool:
    """Text travels as is over SSE; anything else is base64-encoded there."""
    kind = base_type(content_type)
    return kind.startswith("text/") or kind == "application/json"


def next_cursor(client_cursor: str | None, now: float | None = None) -> str:
    """The protocol's CDN-collapsing cursor: the current 20 s interval, and always
    past the one the client echoed so that a cached answer cannot loop."""
    interval = int(((time.time() if now is None else now) - _CURSOR_EPOCH) // _CURSOR_INTERVAL)
    if client_cursor is not None and client_cursor.isascii() and client_cursor.isdigit():
        echoed = int(client_cursor[:18])
        if echoed >= interval:
            jitter = 1 + secrets.randbelow(3600)
            interval = echoed + max(1, jitter // _CURSOR_INTERVAL)
    return str(interval)
