"""``firestore://`` store URLs (see `stream_gateway.stores`).

``firestore://my-project#collection=streams``: the Google Cloud project (credentials
and ``FIRESTORE_EMULATOR_HOST`` come from the environment, as Google's client takes
them); the fragment's ``collection`` holds the records (default ``streams``).
"""

from __future__ import annotations

from stream_gateway import InvalidArgumentError
from stream_gateway.stores import StoreURL

from .storage import FirestoreStreamStorage

__all__ = ["stream_storage"]


def stream_storage(url: StoreURL) -> FirestoreStreamStorage:
    """The stream storage a ``firestore://`` URL names."""
    url.check_options("collection")
    project = url.location.split("://", 1)[1].strip("/")
    if not project or "/" in project:
        raise InvalidArgumentError(
            f"store URL {url.text!r} must name one project: firestore://<project>"
        )
    return FirestoreStreamStorage(
        project=project, collection=url.option("collection", "streams") or ""
    )
