"""What the storage writes: coalesced batch documents, a record written rarely, big batches."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from firestore_spy import Spy
from google.api_core import exceptions as gexc

from stream_gateway.streams import ChunkEvent, ResultEvent, StreamManager, StreamRecord
from stream_gateway_firestore import FirestoreStreamManager, FirestoreStreamStorage

pytestmark = pytest.mark.anyio

MakeStorage = Callable[..., FirestoreStreamStorage]


def google_error(cls: type[Exception], message: str) -> Exception:
    """``cls(message)``: the google.api_core exception classes are untyped to mypy."""
    return cls(message)


async def test_chunks_are_coalesced_and_the_record_is_written_rarely(project: str) -> None:
    async with FirestoreStreamManager(project=project, lease=1.5) as manager:
        spy = Spy(manager.storage.client)
        writer = await manager.open(flow="chat")
        sid = writer.stream_id
        start = time.monotonic()
        sent = 0
        with anyio.fail_after(30):
            while time.monotonic() - start < 2.0:  # 200 chunks/s for 2 s
                await writer.write({"token": sent})
                sent += 1
                await anyio.sleep(max(0.0, start + sent / 200 - time.monotonic()))
            streaming = [w.at for w in spy.writes_to(f"{sid}/batches/")]
            await writer.done({"n": sent})

    batch_writes = spy.writes_to(f"{sid}/batches/")
    assert all(w.kind == "set" for w in batch_writes)
    assert len(batch_writes) < sent / 10  # far fewer documents than chunks
    # The default flush policy (every 0.1 s) caps writes at 10 per second, in any second.
    assert max(sum(1 for t in streaming if t0 <= t < t0 + 1.0) for t0 in streaming) <= 10

    record_writes = [w for w in spy.writes if w.path == f"streams/{sid}"]
    kinds = [w.kind for w in record_writes]
    assert kinds[0] == "create" and kinds.count("create") == 1
    finishes = [w for w in record_writes if "status" in w.fields]
    assert len(finishes) == 1 and finishes[0] is record_writes[-1]
    renewals = [w for w in record_writes if w.kind == "update" and "status" not in w.fields]
    assert len(renewals) >= 2  # a 1.5 s lease is renewed every 0.5 s
    for renewal in renewals:
        assert set(renewal.fields) <= {"lease_until", "expires_at", "length"}
    assert len(record_writes) == 2 + len(renewals)


async def test_renewal_refreshes_the_stored_length(make_storage: MakeStorage) -> None:
    storage = make_storage()
    async with StreamManager(storage, lease=0.6) as manager:
        writer = await manager.open()
        for i in range(7):
            await writer.write(i)
        await writer.flush()
        await anyio.sleep(0.5)  # at least one renewal (every 0.2 s)
        snap = await storage.client.document(f"streams/{writer.stream_id}").get()
        assert snap.get("length") == 7
        await writer.done(None)


async def test_open_stream_length_comes_from_the_last_batch(make_storage: MakeStorage) -> None:
    async with StreamManager(make_storage(), flush_interval=60) as writer_side:
        writer = await writer_side.open()
        for i in range(5):
            await writer.write(i)
            await writer.flush()  # one batch document per chunk
        reader = make_storage()  # another process: knows nothing local
        await reader.start()
        try:
            spy = Spy(reader.client)
            record = await reader.load(writer.stream_id)
            assert record is not None and (record.status, record.length) == ("open", 5)
            # The record says 0 (never rewritten per flush); one batch document told the rest.
            assert [p for p in spy.reads if "/batches/" in p] == [
                f"streams/{writer.stream_id}/batches/000000000004"
            ]
        finally:
            await reader.close()
        await writer.done(None)


async def test_large_batches_split_below_the_document_limit(make_storage: MakeStorage) -> None:
    big = [("x" * 200_000) + str(i) for i in range(12)]  # ~2.4 MB in one flush
    storage = make_storage()
    async with StreamManager(storage, flush_interval=10, max_batch=100) as manager:
        spy = Spy(storage.client)
        writer = await manager.open()
        for chunk in big:
            await writer.write(chunk)
        await writer.done("big")
        events = [e async for e in manager.subscribe(writer.stream_id)]
    assert [e.data for e in events if isinstance(e, ChunkEvent)] == big
    assert events[-1] == ResultEvent(b'"big"')
    batch_docs = spy.writes_to("/batches/")
    assert len(batch_docs) == 3  # 4 chunks of ~200 KB per document (< 900 KiB each)


async def test_a_create_that_landed_but_failed_is_not_an_existing_stream(
    make_storage: MakeStorage,
) -> None:
    storage = make_storage()
    async with StreamManager(storage) as manager:
        api: Any = storage.client._firestore_api
        commit = api.commit
        failures: list[int] = []

        async def land_then_fail(*args: Any, **kwargs: Any) -> Any:
            result = await commit(*args, **kwargs)
            if not failures:
                failures.append(1)
                raise google_error(gexc.DeadlineExceeded, "the answer was lost")
            return result

        api.commit = land_then_fail
        writer = await manager.open("landed-but-failed-0001")
        api.commit = commit
        assert failures == [1]
        await writer.write("ok")
        await writer.done(None)
        assert (await manager.info(writer.stream_id)).length == 1


async def test_chunks_with_raw_newlines_survive(make_storage: MakeStorage) -> None:
    storage = make_storage()
    await storage.start()
    try:
        now = time.time()
        await storage.create(StreamRecord("raw-newlines-00001", "", now, now, now + 60))
        chunks = [b'{"a":\n1}', b"2", b"[\r\n]"]
        await storage.append("raw-newlines-00001", 0, chunks)
        assert await storage.read("raw-newlines-00001", 0, 10) == chunks
        assert await storage.read("raw-newlines-00001", 1, 1) == [b"2"]
    finally:
        await storage.close()
