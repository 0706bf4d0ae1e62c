"""``stream-gateway streams ...`` against every stream backend that another process can
reach (all but memory), with ``--json`` output parsed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import anyio
import pytest

from stream_gateway.streams import StreamManager
from tests.backends import BACKENDS, BackendHarness, selected_backends
from tests.cli.support import runner_for, store_url

pytestmark = pytest.mark.anyio


@pytest.fixture(params=[name for name in selected_backends() if name != "memory"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[BackendHarness]:
    async with BACKENDS[request.param]() as harness:  # type: ignore[attr-defined]
        yield harness


async def test_streams_commands(backend: BackendHarness) -> None:
    url = store_url(backend)
    ainvoke = runner_for(backend)
    # Each command is a process of its own on Firestore (see `runner_for`): there, the
    # listing's filters and pages, checked by the contract suite, are not repeated.
    thorough = backend.name != "firestore"
    async with StreamManager(backend.new_storage(), flush_interval=0.01) as manager:
        answer = await manager.open(flow="chat", owner="owner-1")
        for token in ("Hel", "lo"):
            await answer.write(token)
        await answer.done({"text": "Hello"})
        live = await manager.open(flow="other")
        await live.write("x")
        await live.flush()

        # ls: newest first, filters, pages
        listed = (await ainvoke("streams", "ls", "--store", url, "--json")).json()
        assert [s["id"] for s in listed["streams"]] == [live.stream_id, answer.stream_id]
        assert listed["next_cursor"] is None
        assert listed["streams"][1]["result"] == {"text": "Hello"}
        if thorough:
            done = (
                await ainvoke("streams", "ls", "--store", url, "--json", "--status", "done")
            ).json()
            assert [s["id"] for s in done["streams"]] == [answer.stream_id]
            assert done["streams"][0]["result"] == {"text": "Hello"}
            other = (
                await ainvoke("streams", "ls", "--store", url, "--json", "--flow", "other")
            ).json()
            assert [s["id"] for s in other["streams"]] == [live.stream_id]
            mine = (
                await ainvoke("streams", "ls", "--store", url, "--json", "--owner", "owner-1")
            ).json()
            assert [s["id"] for s in mine["streams"]] == [answer.stream_id]
            first = (
                await ainvoke("streams", "ls", "--store", url, "--json", "--limit", "1")
            ).json()
            assert [s["id"] for s in first["streams"]] == [live.stream_id]
            rest = (
                await ainvoke(
                    "streams", "ls", "--store", url, "--json", "--cursor", first["next_cursor"]
                )
            ).json()
            assert [s["id"] for s in rest["streams"]] == [answer.stream_id]
            table = await ainvoke("streams", "ls", "--store", url)
            assert table.code == 0 and live.stream_id in table.stdout and "STATUS" in table.stdout

        # info
        info = (
            await ainvoke("streams", "info", "--store", url, "--json", "--", answer.stream_id)
        ).json()
        assert (info["status"], info["length"], info["flow"]) == ("done", 2, "chat")
        assert info["owner"] == "owner-1"
        unknown = await ainvoke("streams", "info", "--store", url, "--json", "--", "0" * 22)
        assert unknown.code == 3 and unknown.error()["status"] == "NOT_FOUND"

        # tail: a finished stream from 0, then a live one from an offset
        tail = await ainvoke("streams", "tail", "--store", url, "--json", "--", answer.stream_id)
        assert tail.code == 0
        assert tail.lines() == [
            {"offset": 0, "chunk": "Hel"},
            {"offset": 1, "chunk": "lo"},
            {"result": {"text": "Hello"}},
        ]
        if thorough:
            text = await ainvoke(
                "streams", "tail", "--store", url, "--text", "--", answer.stream_id
            )
            assert text.stdout == 'Hello\nresult: {"text":"Hello"}\n'
        followed: list[object] = []

        async def follow() -> None:
            outcome = await ainvoke("streams", "tail", "--offset", "1", "--store", url,
                                    "--json", "--", live.stream_id)  # fmt: skip
            followed.extend(outcome.lines())
            followed.append(outcome.code)

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(follow)
                await live.write("y")
                await live.write("z")
                await live.done("end")
        assert followed == [
            {"offset": 1, "chunk": "y"},
            {"offset": 2, "chunk": "z"},
            {"result": "end"},
            0,
        ]

        # cancel: an open stream is flagged; a finished one is left as it is
        victim = await manager.open(flow="chat")
        cancelled = await ainvoke(
            "streams", "cancel", "--store", url, "--json", "--", victim.stream_id
        )
        assert cancelled.json() == {"id": victim.stream_id, "cancel_requested": True}
        assert (await manager.info(victim.stream_id)).cancel_requested
        again = await ainvoke("streams", "cancel", "--store", url, "--json", "--", answer.stream_id)
        assert again.json() == {"id": answer.stream_id, "cancel_requested": False}
        await victim.cancelled()
        errored = await ainvoke("streams", "tail", "--store", url, "--json", "--", victim.stream_id)
        assert errored.code == 1 and errored.lines()[-1]["error"]["status"] == "CANCELLED"

    # purge: a stream whose time is up goes
    async with StreamManager(backend.new_storage(), lease=0.2, ttl=0.01) as brief:
        short = await brief.open(flow="brief")
        await short.done(None)
    await anyio.sleep(0.1)
    purged = (await ainvoke("streams", "purge", "--store", url, "--json")).json()
    assert purged["purged"] >= 1
    gone = await ainvoke("streams", "info", "--store", url, "--json", "--", short.stream_id)
    assert gone.code == 3


async def test_streams_compact(backend: BackendHarness) -> None:
    url = store_url(backend)
    ainvoke = runner_for(backend)
    async with StreamManager(backend.new_storage(), flush_interval=0.01) as manager:
        answer = await manager.open(flow="chat")
        for token in ("Hel", "lo", " wor", "ld"):
            await answer.write(token)
        await answer.done({"text": "Hello world"})
        live = await manager.open(flow="chat")
        await live.write("x")
        await live.flush()

        compacted = await ainvoke(
            "streams", "compact", "--store", url, "--json", "--", answer.stream_id
        )
        assert compacted.code == 0
        report = compacted.json()
        assert (report["id"], report["compacted"], report["reason"]) == (
            answer.stream_id,
            True,
            None,
        )
        assert (report["length"], report["chunks_before"], report["entries_after"]) == (4, 4, 1)
        assert report["bytes_after"] < report["bytes_before"]
        info = await ainvoke("streams", "info", "--store", url, "--json", "--", answer.stream_id)
        assert (info.json()["compacted"], info.json()["length"]) == (1, 4)
        tail = await ainvoke("streams", "tail", "--store", url, "--json", "--", answer.stream_id)
        assert tail.lines() == [
            {"offset": 0, "chunk": "Hello world"},
            {"result": {"text": "Hello world"}},
        ]

        again = await ainvoke("streams", "compact", "--store", url, "--", answer.stream_id)
        assert (again.code, again.stdout.strip()) == (0, "left as it is: already compacted")
        still_open = await ainvoke(
            "streams", "compact", "--store", url, "--json", "--", live.stream_id
        )
        assert still_open.code == 1
        error = json.loads(still_open.stderr)["error"]
        assert error["status"] == "FAILED_PRECONDITION" and "still open" in error["message"]
        unknown = await ainvoke("streams", "compact", "--store", url, "--json", "--", "0" * 22)
        assert unknown.code == 3
        await live.done(None)
