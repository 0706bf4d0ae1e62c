"""The AI SDK sample's flow: an assistant that thinks, calls a tool, then answers.

The "model" is a deterministic stand-in (no API key needed): the answer to a prompt
is always the same tokens, `answer_tokens(prompt)`, so tests can check it exactly.
"""

from __future__ import annotations

import os
from typing import Any

import anyio

from stream_gateway import FlowContext, flow

__all__ = ["answer_tokens", "assistant", "last_user_text"]


def last_user_text(request: dict[str, Any]) -> str:
    """The text of the last user message in the AI SDK's request body."""
    for message in reversed(request.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            parts = message.get("parts") or []
            return "".join(
                p.get("text", "") for p in parts if isinstance(p, dict) and p.get("type") == "text"
            )
    return ""


def answer_tokens(prompt: str) -> list[str]:
    """The stand-in model's answer to ``prompt``, token by token."""
    words = prompt.split()
    text = (
        f"You wrote {len(words)} words. Every token of this answer is stored as it is "
        "made, so a reload, a dropped connection or a second tab picks the answer up "
        "where it is, and the page shows it exactly once."
    )
    return [word + " " for word in text.split(" ")]


@flow
async def assistant(request: dict[str, Any], ctx: FlowContext[Any]) -> dict[str, Any]:
    """Reasoning, a ``count_words`` tool call and its result, then the answer.

    ``AISDK_TOKEN_DELAY`` (seconds, default 0.08) paces the tokens like a model would.
    """
    delay = float(os.environ.get("AISDK_TOKEN_DELAY", "0.08"))
    prompt = last_user_text(request)
    await ctx.send_chunk({"type": "reasoning", "text": "The user wants a word count."})
    call = {"type": "tool-call", "toolCallId": "count-1", "toolName": "count_words"}
    await ctx.send_chunk({**call, "input": {"text": prompt}})
    count = len(prompt.split())
    await ctx.send_chunk({"type": "tool-result", "toolCallId": "count-1", "output": count})
    tokens = answer_tokens(prompt)
    for index, token in enumerate(tokens):
        await anyio.sleep(delay)
        await ctx.send_chunk(token)
        await ctx.send_chunk({"type": "data-progress", "id": "progress", "data": index + 1})
    return {"messageMetadata": {"tokens": len(tokens)}}
