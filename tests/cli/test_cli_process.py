"""The installed ``stream-gateway`` script as a process of its own: help, JSON output,
following a stream another process writes, and the hint when Click is missing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from stream_gateway.streams import SqliteStreamManager
from tests.cli.support import REPO, SCRIPTS, spawn

pytestmark = pytest.mark.anyio


def test_help_reads_well() -> None:
    top = spawn("--help")
    assert top.code == 0
    for group in ("streams", "flows", "schedules", "worker", "unknown id"):
        assert group in top.stdout
    tail = spawn("streams", "tail", "--help")
    assert tail.code == 0 and "--offset" in tail.stdout and "STREAM_GATEWAY_STORE" in tail.stdout
    wrong = spawn("streams", "nope")
    assert wrong.code == 2 and "No such command 'nope'" in wrong.stderr


async def test_tail_follows_a_stream_written_by_another_process(tmp_path: Path) -> None:
    db = tmp_path / "streams.db"
    async with SqliteStreamManager(db, flush_interval=0.01) as manager:
        writer = await manager.open(flow="chat")
        await writer.write("first")
        await writer.flush()
        listed = await anyio.to_thread.run_sync(
            lambda: spawn("streams", "ls", "--store", str(db), "--json")
        )
        assert [s["id"] for s in listed.json()["streams"]] == [writer.stream_id]
        async with await anyio.open_process(
            [str(SCRIPTS / "stream-gateway"), "streams", "tail", "--json", "--", writer.stream_id],
            cwd=REPO,
            env={"STREAM_GATEWAY_STORE": str(db), "PATH": ""},
            stderr=subprocess.DEVNULL,
        ) as process:
            assert process.stdout is not None
            out = b""
            with anyio.fail_after(30):
                while b"\n" not in out:
                    out += await process.stdout.receive()
                first, _, out = out.partition(b"\n")
                assert json.loads(first) == {"offset": 0, "chunk": "first"}
                await writer.write("second")
                await writer.done({"ok": True})
                async for data in process.stdout:
                    out += data
                code = await process.wait()
    rest = out.decode()
    assert [json.loads(line) for line in rest.splitlines()] == [
        {"offset": 1, "chunk": "second"},
        {"result": {"ok": True}},
    ]
    assert code == 0


def test_without_click_the_script_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['click'] = None\n"
        "from stream_gateway.cli import main\n"
        "main(['--help'])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 1
    assert "pip install 'stream-gateway[cli]'" in done.stderr
