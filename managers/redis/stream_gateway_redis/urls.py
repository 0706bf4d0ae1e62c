"""``redis://`` and ``rediss://`` store URLs (see `stream_gateway.stores`).

``redis://[:password@]host:6379/0#prefix=sg``: the URL as redis-py takes it; the
fragment's ``prefix`` starts every key (default ``sg``).
"""

from __future__ import annotations

from stream_gateway.stores import StoreURL

from .storage import RedisStreamStorage

__all__ = ["stream_storage"]


def stream_storage(url: StoreURL) -> RedisStreamStorage:
    """The stream storage a ``redis://`` URL names."""
    url.check_options("prefix")
    return RedisStreamStorage(url.location, prefix=url.option("prefix", "sg") or "")
