"""The AI SDK sample: a ``useChat`` page over stream-gateway, and Durable Streams.

``ProtocolMounts(manager)`` serves, on one stream manager:

- ``/api/chat``: the `assistant` flow as an AI SDK ``useChat`` endpoint (resume at
  ``/api/chat/{chatId}/stream``, stop with ``DELETE`` there);
- ``/ds/``: the Durable Streams protocol (a flow's stream is ``/ds/<stream id>``);
- ``/aisdk/``: the page (``static/index.html`` and its bundle ``static/app.js``, built
  by ``make`` with esbuild from ``src/`` and the ``ai`` package; no CDN).

``make demo`` mounts them in the chat sample's app. Alone: ``python -m
samples.aisdk.app --port 8000`` (memory manager), then open http://127.0.0.1:8000/aisdk/.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from stream_gateway import InMemoryStreamManager, SqliteStreamManager, StreamManager
from stream_gateway.protocols import DurableStreamsApp, UIMessageStreamApp

from .flows import assistant

__all__ = ["ProtocolMounts", "build_app"]

STATIC = Path(__file__).parent / "static"


class ProtocolMounts:
    """The chat endpoint, the Durable Streams server and the page, for a host app."""

    def __init__(self, manager: StreamManager) -> None:
        self.chat = UIMessageStreamApp(assistant, stream_manager=manager)
        # Long polls under 20 s, so the conformance suite can run against the demo.
        self.durable_streams = DurableStreamsApp(
            manager, cors_origins=["*"], long_poll_timeout=20.0
        )

    @property
    def routes(self) -> list[BaseRoute]:
        """``/api/chat``, ``/ds`` and ``/aisdk``."""

        async def page(request: Request) -> Response:
            if not (STATIC / "app.js").exists():
                return Response("the page's bundle is not built: run `make demo`", 503)
            return FileResponse(STATIC / "index.html")

        async def to_page(request: Request) -> Response:
            return RedirectResponse("/aisdk/")

        return [
            *self.chat.routes("/api/chat"),
            Mount("/ds", app=self.durable_streams),
            Route("/aisdk", to_page),
            Route("/aisdk/", page),
            Mount("/aisdk/static", app=StaticFiles(directory=STATIC, check_dir=False)),
        ]

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """Run from the host app's lifespan."""
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(self.chat.lifespan())
            await stack.enter_async_context(self.durable_streams.lifespan())
            yield


def build_app(manager: StreamManager | None = None) -> Starlette:
    """The sample on its own (a memory manager unless one is given)."""
    mounts = ProtocolMounts(manager or InMemoryStreamManager())

    @asynccontextmanager
    async def lifespan(app: object) -> AsyncIterator[None]:
        async with mounts.lifespan():
            yield

    return Starlette(routes=mounts.routes, lifespan=lifespan)


def main(argv: list[str] | None = None) -> None:
    """Serve the sample; prints ``aisdk-sample listening on http://...`` when ready."""
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--db", help="a SQLite file (default: the memory manager)")
    args = parser.parse_args(argv)
    manager = SqliteStreamManager(Path(args.db)) if args.db else InMemoryStreamManager()
    config = uvicorn.Config(build_app(manager), host=args.host, port=args.port, log_level="warning")
    server = uvicorn.Server(config)

    async def serve() -> None:
        sockets = [config.bind_socket()]
        port = sockets[0].getsockname()[1]
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, sockets)
            while not server.started:  # noqa: ASYNC110 - uvicorn offers no event
                await anyio.sleep(0.01)
            print(f"aisdk-sample listening on http://{args.host}:{port}", flush=True)

    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    anyio.run(serve)
    sys.exit(0)


if __name__ == "__main__":
    main()
