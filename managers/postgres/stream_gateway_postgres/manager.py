"""`PostgresStreamManager`: a `StreamManager` on `PostgresStreamStorage`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stream_gateway.streams import StreamManager

from .storage import PostgresStreamStorage

__all__ = ["PostgresStreamManager"]


class PostgresStreamManager(StreamManager):
    """Durable streams in PostgreSQL, shared by every process on the same database.

    Storage options as in `PostgresStreamStorage`; ``options`` as in `StreamManager`
    (``ttl``, ``lease``, limits). Chunks are flushed every ``flush_interval`` seconds
    (0.05 by default): a crash of the writer's process loses at most that window of
    chunks, never a committed one.
    """

    storage: PostgresStreamStorage

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "stream_gateway",
        flush_interval: float = 0.05,
        max_connections: int = 10,
        command_timeout: float = 10.0,
        listen_dsn: str | None = None,
        connect_options: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        storage = PostgresStreamStorage(
            dsn,
            schema=schema,
            flush_interval=flush_interval,
            max_connections=max_connections,
            command_timeout=command_timeout,
            listen_dsn=listen_dsn,
            connect_options=connect_options,
        )
        super().__init__(storage, **options)
