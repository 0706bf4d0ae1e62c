"""Token sources for the chat sample: a deterministic fake, or an OpenAI-compatible API."""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator

import anyio
import httpx

__all__ = ["fake_tokens", "openai_tokens", "tokens"]

_ANSWER = (
    "Durable streaming means a reply like this one survives a page reload, a dropped "
    "connection or a deploy. Every token is committed to a stream manager as it is "
    "produced, under a stream id the client keeps. When the connection comes back, "
    "the client asks for the tokens after the last one it saw, and the server replays "
    "them before following the live ones. You asked: "
)


async def fake_tokens(prompt: str, tokens_per_second: float) -> AsyncIterator[str]:
    """A deterministic answer about ``prompt``, one word-piece at a time."""
    text = _ANSWER + (prompt.strip() or "(nothing)")
    pause = 1.0 / tokens_per_second if tokens_per_second > 0 else 0.0
    for token in re.findall(r"\S+\s*", text):
        if pause:
            await anyio.sleep(pause)
        yield token


async def openai_tokens(prompt: str, base_url: str, model: str, api_key: str) -> AsyncIterator[str]:
    """Stream a chat completion from an OpenAI-compatible ``/chat/completions`` endpoint."""
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": prompt}]}
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=60) as client,
        client.stream("POST", "/chat/completions", json=body, headers=headers) as response,
    ):
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data:") or line.strip() == "data: [DONE]":
                continue
            delta = json.loads(line[5:])["choices"][0].get("delta", {})
            if delta.get("content"):
                yield delta["content"]


def tokens(prompt: str) -> AsyncIterator[str]:
    """The configured source: ``CHAT_OPENAI_BASE_URL`` set -> that API, else the fake.

    ``CHAT_TOKENS_PER_SECOND`` paces the fake (default 30); ``CHAT_OPENAI_MODEL`` and
    ``CHAT_OPENAI_API_KEY`` configure the API.
    """
    base_url = os.environ.get("CHAT_OPENAI_BASE_URL")
    if base_url:
        return openai_tokens(
            prompt,
            base_url,
            os.environ.get("CHAT_OPENAI_MODEL", "gpt-4o-mini"),
            os.environ.get("CHAT_OPENAI_API_KEY", ""),
        )
    return fake_tokens(prompt, float(os.environ.get("CHAT_TOKENS_PER_SECOND", "30")))
