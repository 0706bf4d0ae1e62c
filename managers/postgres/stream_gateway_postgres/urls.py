"""``postgresql://`` store URLs (see `stream_gateway.stores`).

``postgresql://user:password@host:5432/db#schema=stream_gateway``: the DSN as libpq takes
it; the fragment's ``schema`` picks the schema (default ``stream_gateway``), for the
streams and the durable flows alike (they share it; their tables do not clash).
"""

from __future__ import annotations

from stream_gateway.stores import StoreURL

from .durable import PostgresDurableStore
from .storage import PostgresStreamStorage

__all__ = ["durable_store", "stream_storage"]


def stream_storage(url: StoreURL) -> PostgresStreamStorage:
    """The stream storage a ``postgresql://`` URL names."""
    url.check_options("schema")
    dsn = url.location.replace("postgres://", "postgresql://", 1)
    return PostgresStreamStorage(dsn, schema=url.option("schema", "stream_gateway") or "")


def durable_store(url: StoreURL) -> PostgresDurableStore:
    """The durable store a ``postgresql://`` URL names."""
    url.check_options("schema")
    dsn = url.location.replace("postgres://", "postgresql://", 1)
    return PostgresDurableStore(dsn, schema=url.option("schema", "stream_gateway") or "")
