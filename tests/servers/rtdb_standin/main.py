"""Command line: ``python -m tests.servers.rtdb_standin --host H --port P [...]``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys
from collections.abc import Sequence

import uvicorn

from .app import StandinApp
from .sse import StreamDropped


class _DroppedStreamFilter(logging.Filter):
    """Keep the deliberate aborts of ``/.standin/drop-streams`` out of the error log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], StreamDropped))


class _Server(uvicorn.Server):
    """Ends the open event streams first on shutdown, so stopping the server is quick."""

    def __init__(self, config: uvicorn.Config, app: StandinApp) -> None:
        super().__init__(config)
        self.standin = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.standin.close_streams()
        await super().shutdown(sockets)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.servers.rtdb_standin",
        description="Stand-in for the Firebase Realtime Database emulator (REST + streaming).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000, help="0 picks a free port")
    parser.add_argument("--data-file", default=None, help="JSON file to load and save the data")
    parser.add_argument(
        "--keepalive", type=float, default=30.0, help="seconds between keep-alive events"
    )
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    if args.keepalive <= 0:
        parser.error("--keepalive must be positive")
    return args


async def _serve(server: _Server, host: str) -> None:
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            await task
            raise SystemExit("rtdb-standin failed to start")
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    print(f"rtdb-standin listening on http://{host}:{port}", flush=True)
    await task


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse_args(argv)
    app = StandinApp(data_file=args.data_file, keepalive=args.keepalive)
    logging.getLogger("uvicorn.error").addFilter(_DroppedStreamFilter())
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=2,
    )
    try:
        asyncio.run(_serve(_Server(config, app), args.host))
    except KeyboardInterrupt:
        sys.exit(130)
