"""Pieces on their own: exports, layout encoding, endpoints, tokens, silent listeners."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import anyio
import pytest
from anyio.abc import SocketStream

import stream_gateway_rtdb
from stream_gateway import InvalidArgumentError, UnavailableError
from stream_gateway.streams import StreamRecord, Terminal
from stream_gateway_rtdb import RtdbStreamStorage
from stream_gateway_rtdb._auth import EMULATOR_HOST_ENV, TokenSource, resolve_endpoint
from stream_gateway_rtdb._layout import (
    batch_key,
    check_key,
    decode_batch,
    decode_record,
    encode_batch,
    encode_record,
)
from stream_gateway_rtdb._watch import BatchCache

from rtdb_support import FakeCredential

pytestmark = pytest.mark.anyio


def test_exports_are_sorted_and_public() -> None:
    names = stream_gateway_rtdb.__all__
    assert names == sorted(names) == ["RtdbStreamManager", "RtdbStreamStorage"]
    for name in names:
        assert getattr(stream_gateway_rtdb, name).__doc__


def test_batch_keys_sort_as_offsets() -> None:
    keys = [batch_key(o) for o in (0, 7, 20, 120, 999_999)]
    assert keys == sorted(keys)
    assert batch_key(120) == "000000000120"
    with pytest.raises(InvalidArgumentError):
        batch_key(-1)


@pytest.mark.parametrize("bad", ["", "a/b", "a.b", "a$b", "a#b", "a[b]", "é", "a b", "x" * 769])
def test_keys_that_could_change_a_path_are_refused(bad: str) -> None:
    with pytest.raises(InvalidArgumentError):
        check_key(bad)


def test_record_and_batch_round_trip() -> None:
    record = StreamRecord(
        stream_id="s" * 22,
        flow="chat",
        created_at=1.5,
        updated_at=2.0,
        expires_at=3.25,
        owner="abc",
        status="error",
        length=4,
        terminal=Terminal("error", b'{"status":"INTERNAL","message":"x"}'),
        extra={"k": [1, None]},
    )
    assert decode_record(record.stream_id, encode_record(record)) == record
    chunks = [b"[]", b"{}", b"null", b'"\\n"', b"1.0"]
    assert decode_batch(encode_batch(40, chunks)) == (40, chunks)
    assert decode_batch({"o": 1, "n": 3, "c": ["1"]}) is None  # count mismatch: not a batch
    assert decode_record("x" * 16, None) is None


def test_endpoints_follow_firebase_admin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(EMULATOR_HOST_ENV, raising=False)
    prod = resolve_endpoint("https://my-db.firebaseio.com")
    assert (prod.base_url, prod.params, prod.emulator) == (
        "https://my-db.firebaseio.com",
        {},
        False,
    )
    local = resolve_endpoint("http://127.0.0.1:9000/?ns=my-db")
    assert (local.base_url, local.params, local.emulator) == (
        "http://127.0.0.1:9000",
        {"ns": "my-db"},
        True,
    )
    monkeypatch.setenv(EMULATOR_HOST_ENV, "localhost:9001")
    emulated = resolve_endpoint("https://my-db.europe-west1.firebasedatabase.app")
    assert (emulated.base_url, emulated.params) == ("http://localhost:9001", {"ns": "my-db"})
    for bad in ("my-db.firebaseio.com", "http://127.0.0.1:9000", "ftp://x.firebaseio.com"):
        with pytest.raises(ValueError):
            resolve_endpoint(bad)


async def test_tokens_are_cached_then_refreshed_before_expiry() -> None:
    credential = FakeCredential(lifetime=0.6)
    tokens = TokenSource(credential=credential)
    assert await tokens.token() == "token-1"
    assert await tokens.token() == "token-1"
    await anyio.sleep(0.4)  # past half its life: refreshed ahead of expiry
    assert await tokens.token() == "token-2"
    tokens.invalidate("token-1")  # stale: ignored
    assert await tokens.token() == "token-2"
    tokens.invalidate("token-2")
    assert await tokens.token() == "token-3"


async def test_a_failing_credential_is_unavailable() -> None:
    class Broken:
        def get_access_token(self) -> Any:
            raise OSError("metadata server down")

    with pytest.raises(UnavailableError, match="access token"):
        await TokenSource(credential=Broken()).token()


def test_batch_cache_serves_contiguous_chunks_only() -> None:
    cache = BatchCache(max_chunks=6)
    cache.add(0, [b"0", b"1"])
    cache.add(2, [b"2", b"3"])
    cache.add(6, [b"6"])
    assert cache.read(1, 10) == [b"1", b"2", b"3"]
    assert cache.read(4, 10) == []
    cache.add(7, [b"7", b"8"])  # over the bound: the oldest batch goes
    assert cache.read(0, 10) == [] and cache.read(2, 1) == [b"2"]
    assert cache.end == 9


async def _silent_sse_server(stream: SocketStream) -> None:
    async with stream:
        await stream.receive()
        await stream.send(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n")
        await anyio.sleep(30)  # no event, not even a keep-alive


async def test_a_silent_listener_connection_is_noticed() -> None:
    """A connection that stays quiet for twice the keep-alive interval counts as dead."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, _silent_sse_server)
        storage = RtdbStreamStorage(f"http://127.0.0.1:{port}?ns=x", keepalive=0.2)
        await storage.start()
        try:
            watch: AsyncIterator[None] = storage.watch("a-stream-id-0000000")
            with anyio.fail_after(10), pytest.raises(UnavailableError):
                async with aclosing(watch):  # type: ignore[type-var]
                    async for _ in watch:
                        pass
        finally:
            await storage.close()
        tg.cancel_scope.cancel()
