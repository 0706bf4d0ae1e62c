"""The agent sample: its research flow over HTTP in the demo app (stream, tools in a
join, approval by signal, conclusion), the decline path, and its page."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from samples.agent.flows import count_figures, research, search_sources
from samples.approval.flows import FLOWS
from samples.chat.app import build_app
from stream_gateway import InvalidArgumentError
from stream_gateway.client import Reset, stream_flow
from stream_gateway.durable import DurableEngine, InMemoryDurableStore
from tests.gateway.conftest import serve

pytestmark = pytest.mark.anyio

QUESTION = "How do durable workflows survive crashes?"


@asynccontextmanager
async def demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    monkeypatch.delenv("CHAT_OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("CHAT_TOKENS_PER_SECOND", "0")
    monkeypatch.setenv("AGENT_TOOL_SECONDS", "0")
    engine = DurableEngine([*FLOWS, research], store=InMemoryDurableStore(), poll_interval=0.05)
    async with serve(build_app(tmp_path / "s.db", "memory", durable=engine)) as url:
        yield url


async def answer(url: str, http: httpx.AsyncClient, approved: bool) -> tuple[list[Any], Any]:
    """Run the flow, approve (or decline) when asked; the chunks shown and the result."""
    stream = stream_flow(f"{url}/flows/research", {"question": QUESTION}, http=http)
    shown: list[Any] = []
    resets: list[Reset] = []
    with anyio.fail_after(20):
        async for item in stream:
            if isinstance(item, Reset):
                resets.append(item)
                del shown[len(shown) - item.dropped :]
                continue
            shown.append(item)
            if item.get("ask") == "approval":
                signal = await http.post(
                    f"{url}/flows/durable/ops/{stream.stream_id}/signals/approval",
                    json={"payload": {"approved": approved, "comment": "ok" if approved else ""}},
                )
                assert signal.status_code < 300, signal.text
        result = await stream.result()
    assert resets == []  # nothing failed, so nothing was retracted (none sent twice)
    assert sum(1 for c in shown if c.get("ask")) == 1
    return shown, result


def text_of(shown: list[Any], section: str) -> str:
    return "".join(c["text"] for c in shown if c.get("section") == section)


async def test_streams_the_tools_then_waits_for_approval_then_concludes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with demo(tmp_path, monkeypatch) as url, httpx.AsyncClient(timeout=30) as http:
        shown, result = await answer(url, http, approved=True)
    sections = [c.get("section", "ask") for c in shown]
    # The order a reader sees: overview, both tools, the question, the decision, the end.
    ask = sections.index("ask")
    assert set(sections[:ask]) == {"overview", "sources", "figures"}
    assert sections[: sections.index("sources")] == ["overview"] * sections.index("sources")
    assert sections[ask + 1] == "decision"
    assert set(sections[ask + 2 :]) == {"conclusion"}
    assert result["overview"] == text_of(shown, "overview")
    assert result["overview"].startswith("Durable streaming means")
    assert result["sources"] == search_sources(QUESTION)
    assert text_of(shown, "sources") == "".join(f"- {t}\n" for t in search_sources(QUESTION))
    assert result["figures"] == count_figures(QUESTION)
    assert text_of(shown, "decision") == "Approved: ok"
    assert result["approved"] is True
    assert result["conclusion"] == text_of(shown, "conclusion")
    assert result["conclusion"].endswith(f"Conclude, from 3 sources: {QUESTION}")


async def test_a_declined_answer_ends_without_a_conclusion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with demo(tmp_path, monkeypatch) as url, httpx.AsyncClient(timeout=30) as http:
        shown, result = await answer(url, http, approved=False)
    assert text_of(shown, "decision") == "Declined"
    assert text_of(shown, "conclusion") == ""
    assert result["approved"] is False and result["conclusion"] is None


async def test_a_malformed_approval_fails_the_answer_with_a_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with demo(tmp_path, monkeypatch) as url, httpx.AsyncClient(timeout=30) as http:
        stream = stream_flow(f"{url}/flows/research", {"question": QUESTION}, http=http)
        with anyio.fail_after(20), pytest.raises(InvalidArgumentError):
            async for item in stream:
                if not isinstance(item, Reset) and item.get("ask") == "approval":
                    await http.post(
                        f"{url}/flows/durable/ops/{stream.stream_id}/signals/approval",
                        json={"payload": {"approved": "maybe"}},
                    )


async def test_the_demo_serves_the_page_and_the_chat_still_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with demo(tmp_path, monkeypatch) as url, httpx.AsyncClient(timeout=30) as http:
        page = await http.get(f"{url}/agent")
        assert page.status_code == 200 and "/flows/research" in page.text
        chat = await http.post(f"{url}/flows/chat", json={"data": {"prompt": "hi"}})
        assert chat.json()["result"].endswith("You asked: hi")


async def test_an_empty_question_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with demo(tmp_path, monkeypatch) as url, httpx.AsyncClient(timeout=30) as http:
        refused = await http.post(f"{url}/flows/research", json={"data": {"question": ""}})
    assert refused.status_code == 400
    assert refused.json()["error"]["status"] == "INVALID_ARGUMENT"


async def test_without_an_engine_there_is_no_agent_page() -> None:
    async with serve(build_app(backend="memory")) as url, httpx.AsyncClient(timeout=30) as http:
        assert (await http.get(f"{url}/agent")).status_code == 404
