"""A gateway server for the fan-out benchmark: ``bench._apps``'s flows on a chosen backend.

    PYTHONPATH=<checkout> python fanout_server.py redis  <url>#<key prefix>
    PYTHONPATH=<checkout> python fanout_server.py sqlite <database file>

Prints ``listening PORT`` when ready (uvicorn on asyncio + h11, loopback, port 0).
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import uvicorn
from bench._apps import gateway_app

from stream_gateway.streams import SqliteStreamManager, StreamManager
from stream_gateway_redis import RedisStreamManager


def make_manager(kind: str, location: str) -> StreamManager:
    if kind == "redis":
        url, _, prefix = location.partition("#")
        return RedisStreamManager(url, prefix=prefix, max_stream_chunks=10_000_000)
    if kind == "sqlite":
        return SqliteStreamManager(Path(location), max_stream_chunks=10_000_000)
    raise SystemExit(f"unknown backend {kind!r}: redis or sqlite")


def main() -> None:
    app = gateway_app(make_manager(sys.argv[1], sys.argv[2]))
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    sock = config.bind_socket()

    async def serve() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            while not server.started:  # noqa: ASYNC110 - uvicorn offers no event
                await anyio.sleep(0.01)
            print(f"listening {sock.getsockname()[1]}", flush=True)

    anyio.run(serve)


if __name__ == "__main__":
    main()
