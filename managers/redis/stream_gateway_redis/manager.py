"""`RedisStreamManager`: a `StreamManager` on `RedisStreamStorage`."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from stream_gateway import StreamManager

from .storage import RedisStreamStorage

__all__ = ["RedisStreamManager"]


class RedisStreamManager(StreamManager):
    """Durable, resumable streams in Redis, shared by every process and machine that
    uses the same server.

    ```python
    from stream_gateway_redis import RedisStreamManager

    manager = RedisStreamManager("redis://localhost:6379/0")
    ```

    Storage options as in `RedisStreamStorage`; the others as in `StreamManager`
    (``flush_interval`` defaults to the storage's 0.02 s: a crash of the writing process
    loses at most that much of a stream, and a stream costs at most ~50 appends a
    second, one command each).
    """

    storage: RedisStreamStorage

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Redis | None = None,
        prefix: str = "sg",
        block: float = 10.0,
        cache_chunks: int = 4096,
        **options: Any,
    ) -> None:
        storage = RedisStreamStorage(
            url, client=client, prefix=prefix, block=block, cache_chunks=cache_chunks
        )
        super().__init__(storage, **options)
