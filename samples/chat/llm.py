"""Token sources for the chat sample: a deterministic fake, or an OpenAI-compatible API."""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator

import anyio
import httpx

from stream_gateway import UnavailableError

__all__ = ["DEFAULT_TOKENS_PER_SECOND", "fake_tokens", "openai_tokens", "tokens"]

# Slow enough to reload the page, or drop the connection, in the middle of an answer.
DEFAULT_TOKENS_PER_SECOND = 8.0

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
    """Stream a chat completion from an OpenAI-compatible ``/chat/completions`` endpoint.

    An endpoint that fails, answers an HTTP error or breaks off mid-answer raises
    `UnavailableError` with a message fit for the user (the cause is logged by the
    gateway as the exception's ``__cause__``).
    """
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": prompt}]}
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        async with (
            httpx.AsyncClient(base_url=base_url, timeout=60) as client,
            client.stream("POST", "/chat/completions", json=body, headers=headers) as response,
        ):
            if not response.is_success:
                raise UnavailableError(
                    f"the language model answered HTTP {response.status_code}",
                    details={"httpStatus": response.status_code},
                )
            async for line in response.aiter_lines():
                if not line.startswith("data:") or line.strip() == "data: [DONE]":
                    continue
                delta = json.loads(line[5:])["choices"][0].get("delta", {})
                if delta.get("content"):
                    yield delta["content"]
    except httpx.TransportError as exc:
        raise UnavailableError("the language model stopped answering") from exc


def tokens(prompt: str) -> AsyncIterator[str]:
    """The configured source: ``CHAT_OPENAI_BASE_URL`` set -> that API, else the fake.

    ``CHAT_TOKENS_PER_SECOND`` paces the fake (default 8, `DEFAULT_TOKENS_PER_SECOND`;
    0 for no pauses); ``CHAT_OPENAI_MODEL`` and
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
    rate = os.environ.get("CHAT_TOKENS_PER_SECOND", "")
    return fake_tokens(prompt, float(rate) if rate else DEFAULT_TOKENS_PER_SECOND)
