"""Backend faults: restarts, dropped listeners, refused access, revoked tokens, outages.

Whatever happens, a subscriber gets every chunk once and the terminal event, or a clear
error: never a hang (every wait is under ``anyio.fail_after``) and never a short stream
that looks complete.
"""

from __future__ import annotations

import anyio
import pytest

from stream_gateway import PermissionDeniedError, UnavailableError
from stream_gateway.streams import ErrorEvent, ResultEvent, StreamEvent
from stream_gateway_rtdb import RtdbStreamManager
from stream_gateway_rtdb.testing import StandinServer

from rtdb_support import FakeCredential, Site, chunks_of, collect, new_namespace

pytestmark = pytest.mark.anyio


async def test_writes_retry_across_a_server_restart(restartable: StandinServer) -> None:
    url = restartable.database_url(new_namespace())
    async with (
        RtdbStreamManager(url, lease=10, timeout=2) as a,
        RtdbStreamManager(url, timeout=2) as b,
    ):
        writer = await a.open()
        received: list[StreamEvent] = []

        async def follow() -> None:
            received.extend(await collect(b, writer.stream_id))

        async with anyio.create_task_group() as tg:
            for i in range(30):
                await writer.write(i)
            await writer.flush()
            tg.start_soon(follow)
            await anyio.sleep(0.3)
            await anyio.to_thread.run_sync(restartable.stop)
            for i in range(30, 60):  # buffered; the flushes retry in the background
                await writer.write(i)
                await anyio.sleep(0.02)
            await anyio.to_thread.run_sync(restartable.start)
            for i in range(60, 90):
                await writer.write(i)
            with anyio.fail_after(30):
                await writer.done("after restart")

    assert chunks_of(received) == [(i, i) for i in range(90)]
    assert received[-1] == ResultEvent(b'"after restart"')


async def test_dropped_listeners_reconnect_and_miss_nothing(private_site: Site) -> None:
    server = private_site.server
    async with RtdbStreamManager(private_site.url) as a, RtdbStreamManager(private_site.url) as b:
        writer = await a.open()
        received: list[StreamEvent] = []

        async def follow() -> None:
            received.extend(await collect(b, writer.stream_id))

        dropped = 0
        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            for i in range(300):
                await writer.write(i)
                await anyio.sleep(0.002)
                if i % 60 == 30:
                    dropped += await server.drop_streams()
            await writer.done("r")
    assert dropped >= 4  # both connections of b's listener, at least twice
    assert (await server.stats())["stream_opens"] > 2
    assert chunks_of(received) == [(i, i) for i in range(300)]
    assert received[-1] == ResultEvent(b'"r"')


async def test_denied_reads_end_the_subscription_with_an_error(private_site: Site) -> None:
    """The rules stop allowing the read while a subscriber waits: its listener is
    cancelled and the subscriber gets `PermissionDeniedError`, not an endless wait."""
    url = private_site.url
    reader_credential = FakeCredential()  # not the emulator's admin: the rules apply
    async with (
        RtdbStreamManager(url) as a,
        RtdbStreamManager(url, credential=reader_credential) as b,
    ):
        writer = await a.open()
        await writer.write("visible")
        await writer.flush()
        received: list[StreamEvent] = []
        first = anyio.Event()
        failure: list[Exception] = []

        async def follow() -> None:
            try:
                async for event in b.subscribe(writer.stream_id):
                    received.append(event)
                    first.set()
            except PermissionDeniedError as exc:
                failure.append(exc)

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(follow)
                await first.wait()
                await anyio.sleep(0.2)  # caught up: waiting on its listener
                sid = writer.stream_id
                await private_site.server.deny(f"streams/meta/{sid}", f"streams/batches/{sid}")
        assert chunks_of(received) == [(0, "visible")]
        assert len(failure) == 1
        await writer.done(None)


async def test_denied_writes_fail_the_writer(private_site: Site) -> None:
    async with RtdbStreamManager(private_site.url, credential=FakeCredential()) as manager:
        writer = await manager.open()
        await private_site.server.deny("streams/batches")
        await writer.write("refused")
        with anyio.fail_after(20), pytest.raises(PermissionDeniedError):
            await writer.flush()


async def test_a_revoked_token_is_replaced_and_the_listener_reconnects(
    private_site: Site,
) -> None:
    credential = FakeCredential()
    async with (
        RtdbStreamManager(private_site.url) as a,
        RtdbStreamManager(private_site.url, credential=credential) as b,
    ):
        writer = await a.open()
        received: list[StreamEvent] = []

        async def follow() -> None:
            received.extend(await collect(b, writer.stream_id))

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            for i in range(100):
                await writer.write(i)
                await anyio.sleep(0.003)
                if i == 50:
                    await private_site.server.revoke("token-1")
            await writer.done("r")
    assert credential.calls >= 2
    # b's listener: two connections, opened again with the new token after auth_revoked.
    assert (await private_site.server.stats())["stream_opens"] >= 4
    assert chunks_of(received) == [(i, i) for i in range(100)]
    assert received[-1] == ResultEvent(b'"r"')


async def test_an_outage_longer_than_the_retry_window_fails_the_writer(
    restartable: StandinServer,
) -> None:
    url = restartable.database_url(new_namespace())
    async with RtdbStreamManager(url, write_retry_for=1.0, lease=30, timeout=1) as manager:
        writer = await manager.open()
        for i in range(5):
            await writer.write(i)
        await writer.flush()
        await anyio.to_thread.run_sync(restartable.stop)
        for i in range(5, 10):
            await writer.write(i)
        with anyio.fail_after(30), pytest.raises(UnavailableError):
            await writer.flush()
        with pytest.raises(UnavailableError):
            await writer.write(10)  # the writer failed: at once, no second window
        # The flow fails: it ends the stream with its error once the server is back.
        # The committed chunks are kept; those buffered when the writer gave up are
        # dropped, as its subscribers were told the stream ended there.
        await anyio.to_thread.run_sync(restartable.start)
        with anyio.fail_after(30):
            await writer.error(UnavailableError("backend outage"))
        events = await collect(manager, writer.stream_id)
    assert chunks_of(events) == [(i, i) for i in range(5)]
    assert events[-1] == ErrorEvent("UNAVAILABLE", "backend outage")
