"""The chat sample served for the browser tests, with the test server's drop control.

Run: ``python -m tests.browser.chat_server --port 0 [--manager sqlite|memory] [--db
PATH]``; prints ``chat-app listening on http://127.0.0.1:PORT`` when ready.

It serves the real sample (`samples.chat.app`) with its SQLite stream manager at
``--db`` (default: a fresh temporary file), or with ``--manager memory`` its in-memory
one. Either way ``POST /_test/drops`` ``{"count", "seed",
"max_bytes"?}`` makes the next ``count`` streaming responses break off mid-body, and
``GET /_test/drops`` tells how many are left (see `tests.servers.flows_app`).
``CHAT_TOKENS_PER_SECOND`` paces the fake LLM.

``--upstream-breaks-after N`` points the sample's OpenAI-compatible path
(``CHAT_OPENAI_BASE_URL``) at this server's own ``/_test/openai/v1``, which streams the
fake answer and drops the connection after ``N`` tokens: every answer then fails
mid-way, as with a model API that breaks off.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from samples.chat.llm import fake_tokens
from tests.servers.flows_app import DropConnections

UPSTREAM = "/_test/openai/v1"


def sample_app(manager: str, db: Path) -> ASGIApp:
    """The real sample (`samples.chat.app`) on the stream manager named ``manager``."""
    # The sample module builds an app at import time from STREAM_DB: point it here too.
    os.environ["STREAM_DB"] = str(db)
    from samples.chat.app import build_app

    return build_app(db, backend=manager)


def upstream_that_breaks_off(after: int) -> ASGIApp:
    """An OpenAI-compatible ``/chat/completions`` that streams the fake answer to the
    prompt (paced by ``CHAT_TOKENS_PER_SECOND``) and drops the connection after
    ``after`` tokens (the response is left incomplete, so uvicorn closes it)."""

    async def completions(scope: Scope, receive: Receive, send: Send) -> None:
        body = json.loads(await Request(scope, receive).body())
        prompt = body["messages"][-1]["content"]
        rate = float(os.environ.get("CHAT_TOKENS_PER_SECOND") or 8)
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        sent = 0
        async for token in fake_tokens(prompt, rate):
            if sent == after:
                return
            delta = {"choices": [{"delta": {"content": token}}]}
            event = f"data: {json.dumps(delta)}\n\n".encode()
            await send({"type": "http.response.body", "body": event, "more_body": True})
            sent += 1

    return completions


def with_drop_control(app: ASGIApp, upstream: ASGIApp | None = None) -> ASGIApp:
    """``app`` behind `DropConnections`, plus ``/_test/drops`` to configure it, and
    ``upstream`` (if any) at `UPSTREAM`."""
    drops = DropConnections(app)

    async def control(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path")
        if upstream is not None and path == f"{UPSTREAM}/chat/completions":
            await upstream(scope, receive, send)
            return
        if scope["type"] != "http" or scope["path"] != "/_test/drops":
            await drops(scope, receive, send)
            return
        request = Request(scope, receive)
        if request.method == "POST":
            body = await request.json()
            drops.configure(
                int(body["count"]), int(body.get("seed", 0)), int(body.get("max_bytes", 2000))
            )
        await JSONResponse({"left": drops.left})(scope, receive, send)

    return control


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--manager", default="sqlite", choices=["sqlite", "memory"])
    parser.add_argument("--db", help="SQLite file (default: a fresh temporary one)")
    parser.add_argument("--upstream-breaks-after", type=int, metavar="N")
    args = parser.parse_args(argv)
    breaks = args.upstream_breaks_after
    upstream = None if breaks is None else upstream_that_breaks_off(breaks)
    with tempfile.TemporaryDirectory(prefix="chat-browser-") as tmp:
        app = sample_app(args.manager, Path(args.db) if args.db else Path(tmp) / "streams.db")
        config = uvicorn.Config(
            with_drop_control(app, upstream), host=args.host, port=args.port, log_level="warning"
        )
        server = uvicorn.Server(config)

        async def serve() -> None:
            sockets = [config.bind_socket()]
            port = sockets[0].getsockname()[1]
            if upstream is not None:  # read by the sample on every call
                os.environ["CHAT_OPENAI_BASE_URL"] = f"http://{args.host}:{port}{UPSTREAM}"
            async with anyio.create_task_group() as tg:
                tg.start_soon(server.serve, sockets)
                while not server.started:  # noqa: ASYNC110 - uvicorn offers no event
                    await anyio.sleep(0.01)
                print(
                    f"chat-app listening on http://{args.host}:{port} ({args.manager})",
                    flush=True,
                )

        anyio.run(serve)
    sys.exit(0)


if __name__ == "__main__":
    main()
