"""The chat flow: streams an answer token by token."""

from __future__ import annotations

from pydantic import BaseModel, Field

from stream_gateway import FlowContext, flow

from .llm import tokens

__all__ = ["ChatInput", "chat"]


class ChatInput(BaseModel):
    """What the page sends."""

    prompt: str = Field(min_length=1, max_length=4000)


@flow(input=ChatInput, output=str, chunk=str)
async def chat(request: ChatInput, ctx: FlowContext[str]) -> str:
    """Answer the prompt, one token per chunk; the result is the whole answer."""
    answer = []
    async for token in tokens(request.prompt):
        answer.append(token)
        await ctx.send_chunk(token)
    return "".join(answer)
