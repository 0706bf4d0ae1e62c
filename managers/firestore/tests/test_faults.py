"""Backend faults: the emulator stopped mid-stream, restarted empty or not at all.

The emulator keeps data in memory only, so a restart is a database that lost every
stream: the honest outcome is a clear error for the writer and for subscribers,
never a subscriber that hangs or one that sees a short stream end as a success.
"""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import anyio.to_thread
import pytest

from stream_gateway import GatewayError, StreamNotFoundError, UnavailableError
from stream_gateway.streams import ChunkEvent, ErrorEvent, ResultEvent, StreamEvent, StreamManager
from stream_gateway_firestore import FirestoreStreamStorage
from stream_gateway_firestore.testing import HOST_ENV, FirestoreEmulator

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture(scope="module")
def private_emulator() -> Iterator[FirestoreEmulator]:
    """An emulator of these tests' own, so stopping it disturbs no other test."""
    with FirestoreEmulator() as emulator:
        yield emulator


@pytest.fixture
def emulator(
    private_emulator: FirestoreEmulator, monkeypatch: pytest.MonkeyPatch
) -> FirestoreEmulator:
    monkeypatch.setenv(HOST_ENV, private_emulator.address)
    if not private_emulator.is_up():
        private_emulator.start()
    return private_emulator


def manager(
    emulator: FirestoreEmulator,
    *,
    write_retry_for: float,
    lease: float = 10.0,
    poll_fallback: float = 2.0,
) -> StreamManager:
    return StreamManager(
        FirestoreStreamStorage(project=emulator.project, rpc_timeout=2),
        write_retry_for=write_retry_for,
        lease=lease,
        poll_fallback=poll_fallback,
    )


class Follower:
    """A subscriber in another process, remembering what it saw and how it ended."""

    def __init__(self, manager: StreamManager, stream_id: str) -> None:
        self.manager, self.stream_id = manager, stream_id
        self.events: list[StreamEvent] = []
        self.error: GatewayError | None = None
        self.ended = anyio.Event()
        self._progress = anyio.Event()

    async def run(self) -> None:
        try:
            async for event in self.manager.subscribe(self.stream_id):
                self.events.append(event)
                self._progress.set()
        except GatewayError as exc:
            self.error = exc
        finally:
            self.ended.set()
            self._progress.set()

    async def wait_for(self, count: int) -> None:
        with anyio.fail_after(20):
            while len(self.offsets()) < count and not self.ended.is_set():
                self._progress = anyio.Event()
                await self._progress.wait()

    def offsets(self) -> list[int]:
        return [e.offset for e in self.events if isinstance(e, ChunkEvent)]

    def assert_ended_with_a_clear_error(self) -> None:
        assert self.offsets() == list(range(len(self.offsets())))  # no gap, no repeat
        assert not any(isinstance(e, ResultEvent) for e in self.events)
        if self.error is None:
            assert isinstance(self.events[-1], ErrorEvent)
            assert self.events[-1].status in {"NOT_FOUND", "UNAVAILABLE"}
        else:
            assert isinstance(self.error, StreamNotFoundError | UnavailableError)


async def test_restarted_emulator_lost_the_stream_and_everyone_is_told(
    emulator: FirestoreEmulator,
) -> None:
    async with (
        manager(emulator, lease=3, write_retry_for=20) as a,
        manager(emulator, write_retry_for=20, poll_fallback=0.5) as b,
    ):
        writer = await a.open()
        follower = Follower(b, writer.stream_id)
        async with anyio.create_task_group() as tg:
            tg.start_soon(follower.run)
            for i in range(20):
                await writer.write(i)
            await writer.flush()
            await follower.wait_for(20)

            await anyio.to_thread.run_sync(emulator.stop)
            for i in range(20, 30):
                await writer.write(i)  # buffered; the background flush retries
            await anyio.to_thread.run_sync(emulator.start)

            with anyio.fail_after(60), pytest.raises((StreamNotFoundError, UnavailableError)):
                await writer.done("never stored")  # the record is gone with the old data
            with anyio.fail_after(60):
                await follower.ended.wait()
    follower.assert_ended_with_a_clear_error()


async def test_a_long_outage_ends_writer_and_subscribers_with_unavailable(
    emulator: FirestoreEmulator,
) -> None:
    async with (
        manager(emulator, write_retry_for=1.5) as a,
        manager(emulator, write_retry_for=1.5, poll_fallback=0.5) as b,
    ):
        writer = await a.open()
        follower = Follower(b, writer.stream_id)
        async with anyio.create_task_group() as tg:
            tg.start_soon(follower.run)
            for i in range(5):
                await writer.write(i)
            await writer.flush()
            await follower.wait_for(5)

            await anyio.to_thread.run_sync(emulator.stop)
            try:
                with anyio.fail_after(30), pytest.raises(UnavailableError):
                    for i in range(5, 10):
                        await writer.write(i)
                    await writer.done("never stored")
                with anyio.fail_after(30):
                    await follower.ended.wait()
            finally:
                await anyio.to_thread.run_sync(emulator.start)
    follower.assert_ended_with_a_clear_error()
    assert isinstance(follower.error, UnavailableError) or follower.events[-1] == ErrorEvent(
        "UNAVAILABLE", "stream abandoned"
    )


def test_an_emulator_whose_port_was_taken_starts_on_another(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import socket

    from stream_gateway_firestore import testing

    with socket.socket() as squatter:  # holds the first port the emulator is given
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        real_free_port = testing._free_port
        offered = iter([taken])
        monkeypatch.setattr(testing, "_free_port", lambda: next(offered, None) or real_free_port())
        with FirestoreEmulator() as emulator:
            assert emulator.address != f"127.0.0.1:{taken}"
            assert emulator.is_up()
