"""Where a stream lives in Redis, and how its record is encoded.

```
<prefix>:{<id>}:meta   hash    flow, status, length, created_at, updated_at, expires_at,
                               lease_until, owner, cancel, stop, tkind, tpayload, extra,
                               compacted
<prefix>:{<id>}:log    stream  entry <first offset>-<count>  {d: chunks joined by "\\n"}
                               ...
                               entry <length>-1              {t: kind}  (the terminal)
                               entry <length>-2              {c: count} (once compacted)
<prefix>:expiring      zset    stream id -> expires_at (what `purge` looks at)
<prefix>:created       zset    stream id -> created_at (what `list_streams` walks)
```

The braces are a hash tag: both keys of a stream hash to one cluster slot, so every
script that touches them is legal on Redis Cluster. Entry ids are derived from offsets
(``<first offset>-<chunk count>``), so a retried append finds its own batch instead of
adding it twice, and a read seeks straight to the batch holding an offset.

A compacted stream's log is made anew: its entries as one batch ``0-<count>``, the
terminal entry, and the compaction marker; the hash gains ``compacted``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Literal, cast

from stream_gateway import InternalError, InvalidArgumentError
from stream_gateway.streams import StreamRecord, StreamStatus, Terminal

__all__ = [
    "check_prefix",
    "created_key",
    "decode_record",
    "encode_record",
    "expiry_key",
    "log_key",
    "meta_key",
    "parse_entry_id",
]

_PREFIX = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
TerminalKind = Literal["done", "error", "cancelled"]
_STATUSES: tuple[StreamStatus, ...] = ("open", "done", "error", "cancelled")
_TERMINALS = ("done", "error", "cancelled")
# Stream ids are validated by the manager; this is the storage's own guard, since a
# brace in an id would move the hash tag.
_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


def check_prefix(prefix: str) -> str:
    """A key prefix such as ``"sg"`` or ``"chat:streams"``: no braces, no spaces."""
    if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
        raise ValueError(f"invalid key prefix {prefix!r}: use 1-64 of A-Z a-z 0-9 _ . : -")
    return prefix


def _tag(prefix: str, stream_id: str) -> str:
    if not _ID.fullmatch(stream_id):
        raise InvalidArgumentError("malformed stream id: only A-Z, a-z, 0-9, '_' and '-'")
    return f"{prefix}:{{{stream_id}}}"


def meta_key(prefix: str, stream_id: str) -> str:
    """The hash holding the stream's record."""
    return f"{_tag(prefix, stream_id)}:meta"


def log_key(prefix: str, stream_id: str) -> str:
    """The Redis Stream holding the stream's chunk batches and its terminal entry."""
    return f"{_tag(prefix, stream_id)}:log"


def expiry_key(prefix: str) -> str:
    """The sorted set of stream ids by ``expires_at`` (for `purge`'s count)."""
    return f"{prefix}:expiring"


def created_key(prefix: str) -> str:
    """The sorted set of stream ids by ``created_at`` (for `list_streams`)."""
    return f"{prefix}:created"


def parse_entry_id(entry_id: bytes | str) -> tuple[int, int]:
    """``(first offset, count)`` from an entry id ``"<offset>-<count>"``."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    offset, _, count = text.partition("-")
    return int(offset), int(count)


def _time(value: float) -> str:
    return repr(float(value))


def encode_record(record: StreamRecord) -> dict[str, bytes | str]:
    """The hash fields of a new record (absent fields: ``None`` / false / empty)."""
    fields: dict[str, bytes | str] = {
        "flow": record.flow,
        "status": record.status,
        "length": str(record.length),
        "created_at": _time(record.created_at),
        "updated_at": _time(record.updated_at),
        "expires_at": _time(record.expires_at),
    }
    if record.owner is not None:
        fields["owner"] = record.owner
    if record.lease_until is not None:
        fields["lease_until"] = _time(record.lease_until)
    if record.cancel_requested:
        fields["cancel"] = "1"
    if record.stop_requested:
        fields["stop"] = "1"
    if record.terminal is not None:
        fields["tkind"] = record.terminal.kind
        fields["tpayload"] = record.terminal.payload
    if record.extra:
        fields["extra"] = json.dumps(record.extra, separators=(",", ":"))
    if record.compacted is not None:
        fields["compacted"] = str(record.compacted)
    return fields


def decode_record(stream_id: str, raw: Mapping[Any, Any]) -> StreamRecord | None:
    """The record from a hash read with ``HGETALL`` (empty: ``None``)."""
    if not raw:
        return None
    fields: Mapping[bytes, bytes] = raw

    def text(name: str) -> str | None:
        value = fields.get(name.encode())
        return None if value is None else value.decode()

    try:
        status = text("status")
        if status not in _STATUSES:
            raise ValueError(f"status {status!r}")
        terminal = None
        kind = text("tkind")
        if kind is not None:
            if kind not in _TERMINALS:
                raise ValueError(f"terminal kind {kind!r}")
            terminal = Terminal(cast(TerminalKind, kind), fields.get(b"tpayload", b"null"))
        lease = text("lease_until")
        extra = fields.get(b"extra")
        compacted = text("compacted")
        return StreamRecord(
            stream_id=stream_id,
            flow=text("flow") or "",
            created_at=float(text("created_at") or 0),
            updated_at=float(text("updated_at") or 0),
            expires_at=float(text("expires_at") or 0),
            owner=text("owner"),
            status=status,
            length=int(text("length") or 0),
            lease_until=None if lease is None else float(lease),
            cancel_requested=text("cancel") == "1",
            stop_requested=text("stop") == "1",
            terminal=terminal,
            extra=json.loads(extra) if extra else {},
            compacted=None if compacted is None else int(compacted),
        )
    except ValueError as exc:
        raise InternalError(f"stream {stream_id}: malformed record in Redis ({exc})") from exc
