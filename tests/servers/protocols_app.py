"""The test flows plus the frontend protocols, on one stream manager.

Run: ``python -m tests.servers.protocols_app --port PORT [--manager memory|sqlite]
[--db PATH] [--long-poll-timeout SECONDS]``; it prints ``protocols-app listening on
http://...`` when ready. Mounts:

- ``/flows``: the `Gateway` of `tests.servers.flows_app` (same flows, same auth);
- ``/ds``: `DurableStreamsApp` on the same manager, so the flows' streams are
  readable at ``/ds/<stream id>``;
- ``/api/chat``: the ``chat`` flow as an AI SDK ``useChat`` endpoint
  (`UIMessageStreamApp`).

The ``chat`` flow answers the last user message: reasoning, a tool call and its
result, a ``data-progress`` part, then ``words`` text tokens ``"w0 "``, ``"w1 "``, ...
``delay`` seconds apart (``words`` and ``delay`` come from the request body, as
``useChat``'s ``body`` option sends them). The message ``fail`` makes it fail after
the first token.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.routing import Mount

from stream_gateway import FlowContext, Gateway, InvalidArgumentError, StreamManager, flow
from stream_gateway.protocols import DurableStreamsApp, UIMessageStreamApp

from .flows_app import FLOWS, bearer_auth, make_manager


def last_user_text(request: dict[str, Any]) -> str:
    """The text of the last user message in an AI SDK request body."""
    for message in reversed(request.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            parts = message.get("parts") or []
            return "".join(p.get("text", "") for p in parts if p.get("type") == "text")
    return ""


@flow
async def chat(request: dict[str, Any], ctx: FlowContext[Any]) -> dict[str, Any]:
    """The test chat flow described in the module docstring."""
    text = last_user_text(request)
    words = int(request.get("words", 5))
    delay = float(request.get("delay", 0.0))
    await ctx.send_chunk({"type": "reasoning", "text": f"thinking about {text}"})
    await ctx.send_chunk(
        {"type": "tool-call", "toolCallId": "call-1", "toolName": "lookup", "input": {"q": text}}
    )
    await ctx.send_chunk({"type": "tool-result", "toolCallId": "call-1", "output": {"hits": 3}})
    await ctx.send_chunk({"type": "data-progress", "id": "progress", "data": {"step": 1}})
    for k in range(words):
        if delay:
            await anyio.sleep(delay)
        await ctx.send_chunk(f"w{k} ")
        if text == "fail":
            raise InvalidArgumentError("failed on purpose")
    return {"messageMetadata": {"words": words}}


def build_app(manager: StreamManager, *, long_poll_timeout: float = 30.0) -> Starlette:
    """The gateway at ``/flows``, Durable Streams at ``/ds``, the chat at ``/api/chat``."""
    gateway = Gateway(FLOWS, stream_manager=manager, context_provider=bearer_auth, drain_grace=2.0)
    durable_streams = DurableStreamsApp(
        manager,
        context_provider=bearer_auth,
        long_poll_timeout=long_poll_timeout,
        cors_origins=["*"],
    )

    chat_app = UIMessageStreamApp(
        chat, stream_manager=manager, context_provider=bearer_auth, drain_grace=2.0
    )

    @asynccontextmanager
    async def lifespan(app: object) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(gateway.lifespan())
            await stack.enter_async_context(durable_streams.lifespan())
            await stack.enter_async_context(chat_app.lifespan())
            yield

    return Starlette(
        routes=[
            Mount("/flows", app=gateway),
            Mount("/ds", app=durable_streams),
            *chat_app.routes("/api/chat"),
        ],
        lifespan=lifespan,
    )


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--manager", default="memory", choices=["memory", "sqlite"])
    parser.add_argument("--db")
    parser.add_argument("--long-poll-timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    manager = make_manager(args.manager, args.db, 10.0)
    assert manager is not None
    app = build_app(manager, long_poll_timeout=args.long_poll_timeout)
    # Idle connections stay open longer than Node's fetch keeps them (4 s): with
    # uvicorn's default of 5 s, a loaded machine lets the server close a connection
    # just as the client reuses it, and a request fails with "other side closed".
    config = uvicorn.Config(
        app, host=args.host, port=args.port, log_level="warning", timeout_keep_alive=30
    )
    server = uvicorn.Server(config)

    async def serve() -> None:
        sockets = [config.bind_socket()]
        port = sockets[0].getsockname()[1]
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, sockets)
            while not server.started:  # noqa: ASYNC110 - uvicorn offers no event
                await anyio.sleep(0.01)
            print(f"protocols-app listening on http://{args.host}:{port}", flush=True)

    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    anyio.run(serve)
    sys.exit(0)


if __name__ == "__main__":
    main()
