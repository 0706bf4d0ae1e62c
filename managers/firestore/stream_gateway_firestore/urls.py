"""``firestore://`` store URLs (see `stream_gateway.stores`).

``firestore://my-project#collection=streams``: the Google Cloud project (credentials
and ``FIRESTORE_EMULATOR_HOST`` come from the environment, as Google's client takes
them); the fragment's ``collection`` holds the records (default ``streams``).

``firestore://my-project#prefix=jobs``: durable flows, in collections named
``jobs_executions``, ``jobs_audit``... (default prefix ``durable``); the older
``firestore://my-project?prefix=jobs`` form is still read.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from stream_gateway import InvalidArgumentError
from stream_gateway.stores import StoreURL

from .durable_store import FirestoreDurableStore
from .storage import FirestoreStreamStorage

__all__ = ["durable_store", "stream_storage"]


def stream_storage(url: StoreURL) -> FirestoreStreamStorage:
    """The stream storage a ``firestore://`` URL names."""
    url.check_options("collection")
    project = _project(url)
    if urlsplit(url.location).query:
        raise InvalidArgumentError(
            f"store URL {url.text!r}: a stream store's options go after '#'"
            " (firestore://<project>#collection=name)"
        )
    return FirestoreStreamStorage(
        project=project, collection=url.option("collection", "streams") or ""
    )


def durable_store(url: StoreURL) -> FirestoreDurableStore:
    """The durable store a ``firestore://`` URL names."""
    url.check_options("prefix")
    query = urlsplit(url.location).query
    try:
        legacy = dict(parse_qsl(query, strict_parsing=True)) if query else {}
    except ValueError:
        raise InvalidArgumentError(f"malformed store URL {url.text!r}") from None
    unknown = sorted(set(legacy) - {"prefix"})
    if unknown:
        raise InvalidArgumentError(
            f"unknown option {unknown[0]!r} in store URL {url.text!r}"
            " (a firestore durable store takes: prefix)"
        )
    prefix = url.option("prefix") or legacy.get("prefix") or "durable"
    try:
        return FirestoreDurableStore(project=_project(url), prefix=prefix)
    except ValueError as exc:
        raise InvalidArgumentError(f"store URL {url.text!r}: {exc}") from None


def _project(url: StoreURL) -> str:
    parts = urlsplit(url.location)
    if not parts.netloc or parts.path not in ("", "/"):
        raise InvalidArgumentError(
            f"store URL {url.text!r} must name one project: firestore://<project>"
        )
    return parts.netloc
