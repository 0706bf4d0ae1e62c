"""Durable streams: the stream model, the storage contract, the manager and its backends."""

from .._ids import new_stream_id, validate_stream_id
from .base import (
    ChunkEvent,
    ErrorEvent,
    ResetEvent,
    ResultEvent,
    StreamEvent,
    StreamFilter,
    StreamPage,
    StreamRecord,
    StreamStatus,
    StreamStorage,
    Terminal,
    scanned_page,
)
from .compaction import Coalesce, CompactionReport, join_deltas
from .manager import DURABLE, StreamManager
from .memory import InMemoryStreamManager, InMemoryStreamStorage
from .sqlite import SqliteStreamManager, SqliteStreamStorage
from .writer import StreamWriter

__all__ = [
    "ChunkEvent",
    "Coalesce",
    "CompactionReport",
    "DURABLE",
    "ErrorEvent",
    "InMemoryStreamManager",
    "InMemoryStreamStorage",
    "ResetEvent",
    "ResultEvent",
    "SqliteStreamManager",
    "SqliteStreamStorage",
    "StreamEvent",
    "StreamFilter",
    "StreamManager",
    "StreamPage",
    "StreamRecord",
    "StreamStatus",
    "StreamStorage",
    "StreamWriter",
    "Terminal",
    "join_deltas",
    "new_stream_id",
    "scanned_page",
    "validate_stream_id",
]
