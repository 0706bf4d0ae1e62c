"""`RtdbStreamManager`: a `StreamManager` on `RtdbStreamStorage`."""

from __future__ import annotations

from typing import Any

import httpx

from stream_gateway import StreamManager

from .storage import RtdbStreamStorage

__all__ = ["RtdbStreamManager"]


class RtdbStreamManager(StreamManager):
    """Durable, resumable streams in a Firebase Realtime Database, shared by every
    process and machine that uses the same database.

    ```python
    import firebase_admin
    from stream_gateway_rtdb import RtdbStreamManager

    firebase_admin.initialize_app()  # Application Default Credentials
    manager = RtdbStreamManager("https://my-project-default-rtdb.firebaseio.com")
    ```

    Storage options as in `RtdbStreamStorage`; the others as in `StreamManager`
    (``flush_interval`` defaults to the storage's 0.1 s: a process crash loses at most
    that much of a stream, and a stream costs at most ~10 writes a second).
    """

    storage: RtdbStreamStorage

    def __init__(
        self,
        database_url: str,
        *,
        app: Any = None,
        root: str = "streams",
        http: httpx.AsyncClient | None = None,
        credential: Any = None,
        timeout: float = 10.0,
        keepalive: float = 30.0,
        **options: Any,
    ) -> None:
        storage = RtdbStreamStorage(
            database_url,
            app=app,
            root=root,
            http=http,
            credential=credential,
            timeout=timeout,
            keepalive=keepalive,
        )
        super().__init__(storage, **options)
