"""``stream-gateway flows ...``, ``schedules ...`` and ``worker`` on a SQLite durable
store, with ``--json`` output parsed; a worker in this process runs the flows."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from stream_gateway.durable import DurableEngine, SqliteDurableStore
from stream_gateway.streams import SqliteStreamManager
from tests.cli.cli_flows import FLOWS
from tests.cli.support import REPO, SCRIPTS, ainvoke, invoke
from tests.durable.helpers import finished, until_status

pytestmark = pytest.mark.anyio


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[DurableEngine]:
    engine = DurableEngine(FLOWS, store=SqliteDurableStore(tmp_path / "durable.db"))
    async with engine, engine.worker(poll_interval=0.05, lease=5.0, grace=0.5):
        yield engine


async def test_flows_commands(engine: DurableEngine, tmp_path: Path) -> None:
    url = str(tmp_path / "durable.db")
    approve = (await engine.schedule("approve", "order-1")).name
    listen = (await engine.schedule("listen")).name
    nap = (await engine.schedule("nap")).name
    flaky = (await engine.schedule("flaky")).name
    await until_status(engine, approve, "waiting")
    await until_status(engine, listen, "waiting")
    await until_status(engine, nap, "sleeping")
    await until_status(engine, flaky, "failed")

    # ls, filters
    listed = (await ainvoke("flows", "ls", "--store", url, "--json")).json()
    assert [e["name"] for e in listed["executions"]] == [flaky, nap, listen, approve]
    failed = (await ainvoke("flows", "ls", "--store", url, "--json", "--status", "failed")).json()
    assert [e["name"] for e in failed["executions"]] == [flaky]
    naps = (await ainvoke("flows", "ls", "--store", url, "--json", "--flow", "nap")).json()
    assert [e["name"] for e in naps["executions"]] == [nap]
    page = (await ainvoke("flows", "ls", "--store", url, "--json", "--limit", "3")).json()
    assert len(page["executions"]) == 3 and page["next_cursor"]
    table = await ainvoke("flows", "ls", "--store", url)
    assert table.code == 0 and "BLOCKED ON" in table.stdout and flaky in table.stdout

    # show, detail (the failed step's error in full)
    shown = (await ainvoke("flows", "show", "--store", url, "--json", "--", approve)).json()
    assert (shown["status"], shown["blockedOnStep"]) == ("waiting", "approval")
    detail = (await ainvoke("flows", "detail", "--store", url, "--json", "--", flaky)).json()
    assert detail["operation"]["status"] == "failed"
    assert "the payment service said no" in str(detail["steps"])
    assert any(entry["kind"] == "status" for entry in detail["timeline"])
    readable = await ainvoke("flows", "detail", "--store", url, "--", flaky)
    assert "the payment service said no" in readable.stdout and "timeline:" in readable.stdout

    # resume: a payload the schema refuses (checked at once with --flows), then a good one
    refused = await ainvoke("flows", "resume", "--store", url, "--json",
                            "--flows", "tests.cli.cli_flows:FLOWS",
                            "--", approve, "approval", '"maybe"')  # fmt: skip
    assert refused.code == 2 and refused.error()["status"] == "INVALID_ARGUMENT"
    resumed = await ainvoke("flows", "resume", "--store", url, "--json", "--", approve,
                            "approval", "true")  # fmt: skip
    assert resumed.json()["name"] == approve
    assert (await finished(engine, approve)).response == "order-1: approved"
    twice = await ainvoke(
        "flows", "resume", "--store", url, "--json", "--", approve, "approval", "true"
    )
    assert twice.code == 1 and twice.error()["status"] == "FAILED_PRECONDITION"

    # signal
    sent = await ainvoke(
        "flows", "signal", "--store", url, "--json", "--", listen, "go", '{"n": 1}'
    )
    assert sent.code == 0
    assert (await finished(engine, listen)).response == {"n": 1}
    bad_json = await ainvoke("flows", "signal", "--store", url, "--", listen, "go", "{nope")
    assert bad_json.code == 2 and "not JSON" in bad_json.stderr

    # wake, cancel
    woken = await ainvoke("flows", "wake", "--store", url, "--json", "--", nap)
    assert woken.code == 0 and woken.json()["name"] == nap
    await until_status(engine, nap, "sleeping")
    cancelled = (await ainvoke("flows", "cancel", "--store", url, "--json", "--", nap)).json()
    assert cancelled["status"] == "cancelled"
    late = await ainvoke("flows", "wake", "--store", url, "--json", "--", nap)
    assert late.code == 1 and late.error()["status"] == "FAILED_PRECONDITION"

    # recover: the failed execution runs again (and fails again: its step still raises)
    recovered = (await ainvoke("flows", "recover", "--store", url, "--json", "--", flaky)).json()
    assert recovered["status"] in ("pending", "running", "failed")
    detail = await engine.detail(flaky)
    assert any(e.data.get("recovered") for e in detail.timeline)
    not_failed = await ainvoke("flows", "recover", "--store", url, "--json", "--", approve)
    assert not_failed.code == 1

    # unknown id, in both output modes
    unknown = await ainvoke("flows", "show", "no-such-execution", "--store", url, "--json")
    assert unknown.code == 3 and unknown.error()["status"] == "NOT_FOUND"
    plain = await ainvoke("flows", "show", "no-such-execution", "--store", url)
    assert plain.code == 3 and plain.stderr.startswith("error: ")


async def test_schedules_commands(engine: DurableEngine, tmp_path: Path) -> None:
    url = str(tmp_path / "durable.db")
    await engine.ensure_schedule("nap", None, id="hourly-nap", interval=3600)
    await engine.ensure_schedule("listen", None, id="nightly", cron="0 3 * * *")

    listed = (await ainvoke("schedules", "ls", "--store", url, "--json")).json()
    assert [s["id"] for s in listed["schedules"]] == ["hourly-nap", "nightly"]
    assert listed["schedules"][1]["cron"] == "0 3 * * *"
    after = await ainvoke("schedules", "ls", "--store", url, "--json", "--after", "hourly-nap")
    assert [s["id"] for s in after.json()["schedules"]] == ["nightly"]
    table = await ainvoke("schedules", "ls", "--store", url)
    assert "0 3 * * *" in table.stdout and "3600s" in table.stdout

    paused = (await ainvoke("schedules", "pause", "nightly", "--store", url, "--json")).json()
    assert paused["paused"] is True
    assert (await engine.get_schedule("nightly")).paused
    resumed = (await ainvoke("schedules", "resume", "nightly", "--store", url, "--json")).json()
    assert resumed["paused"] is False
    removed = (await ainvoke("schedules", "remove", "nightly", "--store", url, "--json")).json()
    assert removed == {"removed": "nightly"}
    gone = await ainvoke("schedules", "remove", "nightly", "--store", url, "--json")
    assert gone.code == 3
    left = (await ainvoke("schedules", "ls", "--store", url, "--json")).json()
    assert [s["id"] for s in left["schedules"]] == ["hourly-nap"]


def test_store_errors(tmp_path: Path) -> None:
    missing = invoke("flows", "ls", "--store", str(tmp_path / "nothing.db"), "--json")
    assert missing.code == 2 and "no SQLite file" in missing.error()["message"]
    none = invoke("streams", "ls")
    assert none.code == 2 and "STREAM_GATEWAY_STORE" in none.stderr
    unknown = invoke("streams", "ls", "--store", "mongodb://127.0.0.1/x")
    assert unknown.code == 2 and "no stream store is installed for mongodb://" in unknown.stderr
    # Redis keeps streams only: flows commands say which stores durable flows need.
    plugin = invoke("flows", "ls", "--store", "redis://127.0.0.1:1/0", "--json")
    assert plugin.code == 2
    message = plugin.error()["message"]
    assert "streams only" in message and "pip install stream-gateway-postgres" in message
    # The Postgres plugin provides both: a durable store that does not answer is down.
    durable = invoke("flows", "ls", "--store", "postgresql://u@127.0.0.1:1/db", "--timeout", "1")
    assert durable.code == 4 and "unavailable" in durable.stderr.lower()
    option = invoke("streams", "ls", "--store", "postgresql://u@127.0.0.1:1/db#shema=x")
    assert option.code == 2 and "unknown option 'shema'" in option.stderr
    down = invoke("streams", "ls", "--store", "postgresql://u@127.0.0.1:1/db", "--timeout", "1")
    assert down.code == 4 and "unavailable" in down.stderr.lower()
    secret = invoke("streams", "ls", "--store", "postgresql://u:hunter2@127.0.0.1:1/db#x=1")
    assert secret.code == 2 and "hunter2" not in secret.stderr
    garbage = tmp_path / "garbage.db"
    garbage.write_text("not a database")
    notdb = invoke("streams", "ls", "--store", str(garbage))
    assert notdb.code == 2 and "is not a SQLite database" in notdb.stderr


async def test_a_file_of_the_other_kind_is_named(engine: DurableEngine, tmp_path: Path) -> None:
    durable = str(tmp_path / "durable.db")
    async with SqliteStreamManager(tmp_path / "streams.db") as manager:
        await (await manager.open(flow="f")).done(None)
    swapped = await ainvoke("streams", "ls", "--store", durable)
    assert swapped.code == 2
    assert "holds durable executions, not streams" in swapped.stderr
    other = await ainvoke("flows", "ls", "--store", str(tmp_path / "streams.db"))
    assert other.code == 2 and "holds streams, not durable executions" in other.stderr


def test_worker_command_serves_until_sigterm(tmp_path: Path) -> None:
    db = tmp_path / "durable.db"
    for command in (["stream-gateway", "worker"], ["stream-gateway-worker"]):
        with subprocess.Popen(
            [str(SCRIPTS / command[0]), *command[1:], "--flows", "tests.cli.cli_flows:FLOWS",
             "--ready", "--poll-interval", "0.05",
             *(["--store", str(db)] if command[0] == "stream-gateway" else ["--db", str(db)])],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        ) as process:  # fmt: skip
            try:
                assert process.stdout is not None
                assert process.stdout.readline().strip() == "ready"
                process.send_signal(signal.SIGTERM)
                assert process.wait(timeout=30) == 0
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
