"""``firestore://`` locations: the store's URL form, the one resolver
(`stream_gateway.stores`) behind the command lines, `store_from_url` and the sample."""

from __future__ import annotations

import pytest
from samples.approval.app import make_engine

from stream_gateway import InvalidArgumentError
from stream_gateway.durable import store_from_url
from stream_gateway.stores import open_durable_store, open_stream_storage
from stream_gateway_firestore import FirestoreDurableStore, FirestoreStreamStorage


def test_a_firestore_url_names_the_project_and_optionally_the_prefix() -> None:
    plain = FirestoreDurableStore.from_url("firestore://my-project")
    assert (plain.prefix, plain._project) == ("durable", "my-project")
    named = FirestoreDurableStore.from_url("firestore://my-project?prefix=jobs", rpc_timeout=3)
    assert (named.prefix, named.rpc_timeout) == ("jobs", 3)
    fragment = FirestoreDurableStore.from_url("firestore://my-project#prefix=jobs")
    assert fragment.prefix == "jobs"


@pytest.mark.parametrize(
    "url",
    ["firestore://", "firestore://p/extra", "postgresql://p", "firestore://p?bucket=x"],
)
def test_a_malformed_firestore_url_is_refused(url: str) -> None:
    with pytest.raises(ValueError):
        FirestoreDurableStore.from_url(url)


def test_one_url_opens_the_durable_store_and_the_streams() -> None:
    for url in ("firestore://p#prefix=w", "firestore://p?prefix=w"):
        store = open_durable_store(url)
        assert isinstance(store, FirestoreDurableStore), url
        assert (store._project, store.prefix) == ("p", "w"), url
    assert open_durable_store("firestore://p").prefix == "durable"  # type: ignore[attr-defined]
    streams = open_stream_storage("firestore://p#collection=c")
    assert isinstance(streams, FirestoreStreamStorage)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("firestore://p#collection=c", "unknown option 'collection'"),
        ("firestore://p?bucket=x", "unknown option 'bucket'"),
        ("firestore://p/extra", "must name one project"),
        ("firestore://", "must name one project"),
        ("firestore://p#prefix=no spaces", "prefix must be"),
    ],
)
def test_the_resolver_says_what_is_wrong_with_a_durable_url(url: str, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        open_durable_store(url)


def test_the_worker_cli_and_the_approval_sample_take_a_firestore_url() -> None:
    assert isinstance(store_from_url("firestore://p?prefix=w"), FirestoreDurableStore)
    assert isinstance(store_from_url("firestore://p#prefix=w"), FirestoreDurableStore)
    assert isinstance(make_engine("firestore://p").store, FirestoreDurableStore)
