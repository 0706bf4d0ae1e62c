"""``firestore://`` locations: the store's URL form, the worker CLI and the sample."""

from __future__ import annotations

import pytest
from samples.approval.app import make_engine

from stream_gateway.durable import store_from_url
from stream_gateway_firestore import FirestoreDurableStore


def test_a_firestore_url_names_the_project_and_optionally_the_prefix() -> None:
    plain = FirestoreDurableStore.from_url("firestore://my-project")
    assert (plain.prefix, plain._project) == ("durable", "my-project")
    named = FirestoreDurableStore.from_url("firestore://my-project?prefix=jobs", rpc_timeout=3)
    assert (named.prefix, named.rpc_timeout) == ("jobs", 3)


@pytest.mark.parametrize(
    "url",
    ["firestore://", "firestore://p/extra", "postgresql://p", "firestore://p?bucket=x"],
)
def test_a_malformed_firestore_url_is_refused(url: str) -> None:
    with pytest.raises(ValueError):
        FirestoreDurableStore.from_url(url)


def test_the_worker_cli_and_the_approval_sample_take_a_firestore_url() -> None:
    assert isinstance(store_from_url("firestore://p?prefix=w"), FirestoreDurableStore)
    assert isinstance(make_engine("firestore://p").store, FirestoreDurableStore)
