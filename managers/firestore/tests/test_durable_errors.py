"""How Google's failures reach the durable engine: as `DurableStoreError`, which makes
the run replay later, never as something that looks like a cancellation."""

from __future__ import annotations

import asyncio

import anyio
import pytest
from google.api_core import exceptions as gexc

from stream_gateway.durable import DurableStoreError
from stream_gateway_firestore._durable_calls import store_errors

pytestmark = pytest.mark.anyio


async def test_a_call_grpc_cancelled_is_a_transient_store_error_not_a_cancellation() -> None:
    # gRPC raises asyncio's CancelledError when the channel or server cancels an RPC;
    # taken for a cancellation it silently ended a join's branch task.
    with pytest.raises(DurableStoreError) as caught:
        with store_errors("reading"):
            raise asyncio.CancelledError()
    assert caught.value.transient


async def test_a_real_cancellation_goes_through() -> None:
    with anyio.CancelScope() as scope:
        scope.cancel()
        with store_errors("reading"):
            await anyio.sleep(1)
    assert scope.cancelled_caught


async def test_unavailable_is_transient_and_denied_is_not() -> None:
    with pytest.raises(DurableStoreError) as unavailable, store_errors("reading"):
        raise gexc.ServiceUnavailable("down")  # type: ignore[no-untyped-call]
    assert unavailable.value.transient
    with pytest.raises(DurableStoreError) as denied, store_errors("reading"):
        raise gexc.PermissionDenied("no")  # type: ignore[no-untyped-call]
    assert not denied.value.transient
