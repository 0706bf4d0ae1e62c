"""`FirestoreStreamManager`: a `StreamManager` on `FirestoreStreamStorage`."""

from __future__ import annotations

from typing import Any

from google.cloud.firestore_v1 import AsyncClient, Client

from stream_gateway.streams import StreamManager

from .storage import FirestoreStreamStorage

__all__ = ["FirestoreStreamManager"]


class FirestoreStreamManager(StreamManager):
    """Durable streams in Cloud Firestore, shared by every process on the same database.

    Storage options as in `FirestoreStreamStorage`; ``options`` as in `StreamManager`
    (``ttl``, ``lease``, limits). Chunks are flushed every ``flush_interval`` seconds
    (0.1 by default): a crash loses at most that window of chunks, never a committed one.
    """

    storage: FirestoreStreamStorage

    def __init__(
        self,
        client: AsyncClient | None = None,
        *,
        project: str | None = None,
        collection: str = "streams",
        flush_interval: float = 0.1,
        watch_client: Client | None = None,
        batch_expiry_margin: float = 86400.0,
        rpc_timeout: float = 10.0,
        **options: Any,
    ) -> None:
        storage = FirestoreStreamStorage(
            client,
            project=project,
            collection=collection,
            flush_interval=flush_interval,
            watch_client=watch_client,
            batch_expiry_margin=batch_expiry_margin,
            rpc_timeout=rpc_timeout,
        )
        super().__init__(storage, **options)
