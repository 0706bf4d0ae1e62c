"""A research assistant as one streaming durable flow.

It streams an overview from the language model the chat sample uses (the deterministic
fake, or an OpenAI-compatible API: see `samples.chat.llm`), runs two tools at once in a
``join``, asks a human for approval (the signal ``approval``) and, once approved,
streams its conclusion. Every stage is durable: a worker killed mid-answer is replaced
by another that continues the same stream, and what the dead one streamed after its
last journal entry is retracted (readers see a reset), so the page ends with one
coherent answer.

Chunks are JSON objects a page can render:

- ``{"section": "overview" | "sources" | "figures" | "conclusion" | "decision",
  "text": str}``: text to append to that section;
- ``{"ask": "approval", "text": str}``: the flow now waits for the signal
  ``approval`` with the payload ``{"approved": bool, "comment": str}``
  (``POST /flows/durable/ops/{id}/signals/approval`` with ``{"payload": {...}}``).
"""

from __future__ import annotations

import os
import re
from functools import partial
from typing import Any

import anyio
from pydantic import BaseModel, Field

from stream_gateway.durable import DurableContext, RetryPolicy, durable_flow

from ..chat.llm import tokens

__all__ = ["Decision", "Question", "research", "tool_seconds"]

#: Model calls are retried; a retried attempt's chunks are retracted by a reset.
LLM_RETRY = RetryPolicy(max_attempts=3, backoff_base=0.5)


class Question(BaseModel):
    """What to research."""

    question: str = Field(min_length=1, max_length=2000)


class Decision(BaseModel):
    """The reviewer's answer to the approval request."""

    approved: bool
    comment: str = Field(default="", max_length=2000)


def tool_seconds() -> float:
    """How long each tool takes (``AGENT_TOOL_SECONDS``, default 1; 0 in tests)."""
    return float(os.environ.get("AGENT_TOOL_SECONDS", "1"))


def search_sources(question: str) -> list[str]:
    """Stand-in for a search tool: three deterministic source titles for ``question``."""
    words = re.findall(r"[A-Za-z]{4,}", question) or ["question"]
    topic = " ".join(words[:3]).lower()
    return [
        f"A survey of {topic}",
        f"{topic.capitalize()} in production: lessons learned",
        f"Why {topic} fails, and how to recover",
    ]


def count_figures(question: str) -> dict[str, int]:
    """Stand-in for a calculation tool: a few figures about ``question``."""
    return {"words": len(question.split()), "characters": len(question)}


@durable_flow(input=Question, output=dict[str, Any], chunk=dict[str, Any])
async def research(question: Question, ctx: DurableContext) -> dict[str, Any]:
    """Overview (streamed from the model), two tools in a join, approval, conclusion."""

    async def write(section: str, prompt: str) -> str:
        text = ""
        async for token in tokens(prompt):
            await ctx.send_chunk({"section": section, "text": token})
            text += token
        return text

    overview: str = await ctx.run(
        "overview", partial(write, "overview", question.question), retry=LLM_RETRY
    )

    async def sources(branch: DurableContext) -> list[str]:
        async def search() -> list[str]:
            await anyio.sleep(tool_seconds())
            found = search_sources(question.question)
            for title in found:
                await branch.send_chunk({"section": "sources", "text": f"- {title}\n"})
            return found

        return list(await branch.run("search", search))

    async def figures(branch: DurableContext) -> dict[str, int]:
        async def count() -> dict[str, int]:
            await anyio.sleep(tool_seconds())
            found = count_figures(question.question)
            text = ", ".join(f"{value} {name}" for name, value in found.items())
            await branch.send_chunk({"section": "figures", "text": text})
            return found

        return dict(await branch.run("count", count))

    tools = await ctx.join("tools", {"sources": sources, "figures": figures})

    async def ask() -> None:
        await ctx.send_chunk({"ask": "approval", "text": "Conclude from these findings?"})

    # Sent from a step: its journal entry commits the chunk before the flow parks.
    await ctx.run("ask", ask)
    decision = Decision.model_validate(
        await ctx.wait_for_signal("approval", "approval", schema=Decision)
    )
    verdict = "Approved" if decision.approved else "Declined"
    note = f": {decision.comment}" if decision.comment else ""
    await ctx.send_chunk({"section": "decision", "text": f"{verdict}{note}"})
    result: dict[str, Any] = {
        "question": question.question,
        "overview": overview,
        "sources": tools["sources"],
        "figures": tools["figures"],
        "approved": decision.approved,
        "comment": decision.comment,
        "conclusion": None,
    }
    if not decision.approved:
        return result
    prompt = f"Conclude, from {len(tools['sources'])} sources: {question.question}"
    result["conclusion"] = await ctx.run(
        "conclusion", partial(write, "conclusion", prompt), retry=LLM_RETRY
    )
    return result
