"""`make demo` serves the operator dashboard at /operator/ and prints its login."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from samples.chat.app import demo_app
from tests.gateway.conftest import serve

pytestmark = pytest.mark.anyio


async def test_the_demo_serves_the_dashboard_behind_the_printed_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STREAM_DB", str(tmp_path / "streams.db"))
    monkeypatch.setenv("APPROVAL_DB", str(tmp_path / "approval.sqlite3"))
    monkeypatch.delenv("OPERATOR_TOKEN", raising=False)
    app = demo_app()
    printed = capsys.readouterr().out
    token = printed.split("log in with the token ")[1].split(")")[0]
    assert len(token) >= 16
    login = {"authorization": f"Bearer {token}"}
    async with serve(app) as url, httpx.AsyncClient(timeout=30) as http:
        assert (await http.get(f"{url}/operator/")).status_code == 200
        assert (await http.get(f"{url}/operator/api/executions")).status_code == 401
        started = await http.post(
            f"{url}/flows/durable/expense_approval", json={"data": {"item": "desk", "amount": 9}}
        )
        assert started.status_code == 200
        listed = await http.get(f"{url}/operator/api/executions", headers=login)
        assert [x["name"] for x in listed.json()["executions"]] == [started.json()["name"]]
        schedules = await http.get(f"{url}/operator/api/schedules", headers=login)
        assert [s["id"] for s in schedules.json()["schedules"]] == ["pending-digest"]
        streams = await http.get(f"{url}/operator/api/streams", headers=login)
        assert streams.status_code == 200
