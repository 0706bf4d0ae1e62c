"""Units without a server: the shared-call coalescer, the batch cache, record encoding."""

from __future__ import annotations

import anyio
import pytest

from stream_gateway import UnavailableError
from stream_gateway.streams import StreamRecord, Terminal
from stream_gateway_redis._coalesce import Coalescer
from stream_gateway_redis._layout import decode_record, encode_record
from stream_gateway_redis._watch import BatchCache

pytestmark = pytest.mark.anyio


class Backend:
    """A call whose answers are numbered, held until released."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = anyio.Event()
        self.fail: Exception | None = None

    async def call(self) -> int:
        self.calls += 1
        number = self.calls
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return number


async def test_callers_arriving_during_a_call_share_the_next_one() -> None:
    coalescer: Coalescer[int] = Coalescer()
    backend = Backend()
    results: list[int] = []

    async def ask() -> None:
        results.append(await coalescer.run("k", backend.call))

    async with anyio.create_task_group() as tg:
        tg.start_soon(ask)  # sends call 1
        await anyio.wait_all_tasks_blocked()
        for _ in range(10):  # arrive while call 1 is in flight: it may be stale for them
            tg.start_soon(ask)
        await anyio.wait_all_tasks_blocked()
        assert backend.calls == 1
        backend.release.set()
    # Call 1 for the first caller; one fresh call 2 for the ten others.
    assert backend.calls == 2
    assert sorted(results) == [1] + [2] * 10


async def test_keys_do_not_share_and_calls_in_turn_are_not_shared() -> None:
    coalescer: Coalescer[int] = Coalescer()
    backend = Backend()
    backend.release.set()
    assert [await coalescer.run("k", backend.call) for _ in range(3)] == [1, 2, 3]
    async with anyio.create_task_group() as tg:
        for key in "abc":
            tg.start_soon(coalescer.run, key, backend.call)
    assert backend.calls == 6


async def test_an_error_reaches_every_caller_of_the_round() -> None:
    coalescer: Coalescer[int] = Coalescer()
    backend = Backend()
    backend.fail = UnavailableError("down")
    errors: list[Exception] = []

    async def ask() -> None:
        try:
            await coalescer.run("k", backend.call)
        except UnavailableError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(ask)
        await anyio.wait_all_tasks_blocked()
        backend.release.set()
    assert len(errors) == 5 and backend.calls <= 2


async def test_a_cancelled_leader_leaves_its_followers_to_ask_again() -> None:
    coalescer: Coalescer[int] = Coalescer()
    backend = Backend()
    results: list[int] = []

    async def ask() -> None:
        results.append(await coalescer.run("k", backend.call))

    leader_scope = anyio.CancelScope()

    async def lead() -> None:
        with leader_scope:
            await coalescer.run("k", backend.call)

    async with anyio.create_task_group() as tg:
        tg.start_soon(ask)  # call 1, in flight
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(lead)  # leads round 2, waiting for call 1 to end
        await anyio.wait_all_tasks_blocked()
        for _ in range(3):
            tg.start_soon(ask)  # join round 2
        await anyio.wait_all_tasks_blocked()
        leader_scope.cancel()  # round 2 loses its leader before it is sent
        await anyio.wait_all_tasks_blocked()
        backend.release.set()
    assert sorted(results) == [1, 2, 2, 2]


def test_the_batch_cache_serves_contiguous_batches_within_its_bound() -> None:
    cache = BatchCache(max_chunks=5, end=3)
    assert cache.end == 3 and cache.read(3, 10) == [] and cache.is_current_at(3)
    cache.add(3, [b"3", b"4"])
    cache.add(5, [b"5"])
    assert cache.read(4, 10) == [b"4", b"5"] and cache.read(3, 2) == [b"3", b"4"]
    assert cache.read(2, 10) == [] and cache.read(6, 10) == []
    assert cache.is_current_at(6) and not cache.is_current_at(5)
    cache.loaded_length = 8  # a load saw more than the blocking read brought so far
    assert not cache.is_current_at(6)
    cache.add(6, [b"6", b"7", b"8"])  # 6 chunks held > 5: the oldest batch goes
    assert cache.read(3, 10) == [] and cache.read(5, 10) == [b"5", b"6", b"7", b"8"]
    cache.add(20, [b"20"])  # not contiguous: the window starts again
    assert cache.read(5, 10) == [] and cache.read(20, 10) == [b"20"] and cache.end == 21


def test_records_round_trip_through_the_hash() -> None:
    record = StreamRecord(
        "stream-id-000000001",
        "chat",
        1.5,
        2.25,
        3e9,
        owner="owner-hash",
        status="error",
        length=7,
        lease_until=None,
        cancel_requested=True,
        terminal=Terminal("error", b'{"status":"INTERNAL","message":"x"}'),
        extra={"a": [1, 2]},
    )
    fields = {
        k.encode(): v if isinstance(v, bytes) else v.encode()
        for k, v in encode_record(record).items()
    }
    assert decode_record(record.stream_id, fields) == record
    assert decode_record(record.stream_id, {}) is None
