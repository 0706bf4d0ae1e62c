"""The demo app with the agent sample, served for the browser tests.

Run: ``python -m tests.browser.agent_server --port 0 [--state DIR]``; prints
``agent-app listening on http://127.0.0.1:PORT`` when ready.

It serves `samples.chat.app.build_app` with an engine running the approval sample's
flows and the agent sample's ``research`` (as ``make demo`` does), its executions and
streams in SQLite files under ``--state`` (default: a fresh temporary directory), so
a server started again on the same directory carries on the executions of one that
was killed. ``CHAT_TOKENS_PER_SECOND`` paces the fake model and
``AGENT_TOOL_SECONDS`` the tools; ``--lease`` is the worker's lease (how long a
killed server's executions wait before another claims them).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import anyio


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    from samples.agent.flows import research
    from samples.approval.flows import FLOWS
    from samples.chat.app import build_app
    from stream_gateway.durable import DurableEngine, SqliteDurableStore

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--state", help="directory of the SQLite files (default: a fresh one)")
    parser.add_argument("--lease", type=float, default=30.0, help="the worker's lease (s)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="agent-browser-") as tmp:
        state = Path(args.state or tmp)
        engine = DurableEngine(
            [*FLOWS, research],
            store=SqliteDurableStore(state / "executions.sqlite3"),
            poll_interval=0.1,
        )
        worker = engine.worker(poll_interval=0.1, lease=args.lease)
        app = build_app(state / "streams.sqlite3", "sqlite", durable=worker)
        config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning")
        server = uvicorn.Server(config)

        async def serve() -> None:
            sockets = [config.bind_socket()]
            port = sockets[0].getsockname()[1]
            async with anyio.create_task_group() as tg:
                tg.start_soon(server.serve, sockets)
                while not server.started:  # noqa: ASYNC110 - uvicorn offers no event
                    await anyio.sleep(0.01)
                print(f"agent-app listening on http://{args.host}:{port}", flush=True)

        anyio.run(serve)
    sys.exit(0)


if __name__ == "__main__":
    main()
