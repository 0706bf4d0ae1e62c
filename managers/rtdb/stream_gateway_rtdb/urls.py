"""Realtime Database store URLs, ``https://`` (see `stream_gateway.stores`).

``https://my-db.firebaseio.com#root=streams`` (or an emulator's
``http://127.0.0.1:9000?ns=my-db``): the database URL; the fragment's ``root`` is the
path everything lives under (default ``streams``). Credentials come from the default
firebase-admin app, as `RtdbStreamStorage` takes them.
"""

from __future__ import annotations

from stream_gateway.stores import StoreURL

from .storage import RtdbStreamStorage

__all__ = ["stream_storage"]


def stream_storage(url: StoreURL) -> RtdbStreamStorage:
    """The stream storage a database URL names."""
    url.check_options("root")
    return RtdbStreamStorage(url.location, root=url.option("root", "streams") or "")
