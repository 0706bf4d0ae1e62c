"""A gateway with flows made for tests, shared by the Python, Node and browser suites.

Run: ``python -m tests.servers.flows_app --port PORT [--manager memory|sqlite]
[--db PATH] [--lease SECONDS]`` (``--help`` lists the shutdown and outage knobs); it
prints ``flows-app listening on http://...`` when ready. Flows (all under ``/flows``):

- ``echo``: returns its input; no chunks.
- ``count``: ``{"n", "delay"?, "start"?}`` -> chunks ``{"i": k}``, result ``{"total": n}``.
- ``text``: a string -> one chunk per character (any Unicode), result the string.
- ``fail``: ``{"after", "status", "message"}`` -> ``after`` chunks, then that error.
- ``crash``: chunks, then an unexpected exception (must surface as INTERNAL).
- ``typed``: input ``{"name": str, "age": int >= 0}``, returns a greeting.
- ``big``: ``{"size"}`` -> one chunk of that many characters (limit tests).
- ``gate``: a gate name -> chunk ``"waiting"``, then waits until the gate is opened
  (``POST /_test/gates/<name>``) and returns ``"opened <name>"``.

Auth: ``Authorization: Bearer <user>`` makes ``<user>`` the principal; ``Bearer
denied`` is 403, ``Bearer invalid`` 401; no header is the anonymous principal.

Test control (not part of the product): ``POST /_test/drops`` with ``{"count", "seed",
"max_bytes"?}`` makes the next ``count`` streaming responses break off after a random
number of body bytes, as a dropped connection would; ``GET /_test/drops`` tells how
many are left. ``POST /_test/gates/<name>`` opens the gate ``gate`` runs wait on.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from pathlib import Path
from typing import Any

import anyio
from pydantic import BaseModel, Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stream_gateway import (
    FlowContext,
    Gateway,
    InMemoryStreamManager,
    PermissionDeniedError,
    RequestContext,
    StreamManager,
    UnauthenticatedError,
    error_from_status,
    flow,
)


class CountInput(BaseModel):
    n: int = Field(ge=0, le=1_000_000)
    delay: float = Field(default=0.0, ge=0, le=10)
    start: int = 0


class FailInput(BaseModel):
    after: int = Field(default=0, ge=0)
    status: str = "FAILED_PRECONDITION"
    message: str = "failed on purpose"
    delay: float = 0.0


class Person(BaseModel):
    name: str
    age: int = Field(ge=0)


@flow
async def echo(data: Any, ctx: FlowContext[Any]) -> Any:
    """Return the input unchanged."""
    return data


@flow(input=CountInput, chunk=dict)
async def count(req: CountInput, ctx: FlowContext[dict[str, int]]) -> dict[str, int]:
    """Stream ``{"i": k}`` for k in start..start+n-1."""
    for k in range(req.start, req.start + req.n):
        if req.delay:
            await anyio.sleep(req.delay)
        await ctx.send_chunk({"i": k})
    return {"total": req.n}


@flow(input=str, output=str, chunk=str)
async def text(data: str, ctx: FlowContext[str]) -> str:
    """Stream the string one character at a time."""
    for char in data:
        await ctx.send_chunk(char)
    return data


@flow(input=FailInput)
async def fail(req: FailInput, ctx: FlowContext[Any]) -> None:
    """Send ``after`` chunks, then raise the named error."""
    for k in range(req.after):
        if req.delay:
            await anyio.sleep(req.delay)
        await ctx.send_chunk(k)
    raise error_from_status(req.status, req.message, {"after": req.after})


@flow
async def crash(data: Any, ctx: FlowContext[Any]) -> None:
    """Send two chunks, then fail unexpectedly."""
    await ctx.send_chunk("a")
    await ctx.send_chunk("b")
    raise RuntimeError("secret internal detail")


@flow(input=Person, output=str)
async def typed(person: Person, ctx: FlowContext[Any]) -> str:
    """Greet a validated person."""
    return f"Hello {person.name}, {person.age}"


@flow(input=int)
async def big(size: int, ctx: FlowContext[str]) -> int:
    """Send one chunk of ``size`` characters."""
    await ctx.send_chunk("x" * size)
    return size


@flow
async def words(data: Any, ctx: FlowContext[str]) -> dict[str, Any]:
    """Say ``w0``, ``w1``, ... every 10 ms until asked to stop; return what was said."""
    said: list[str] = []
    for k in range(100_000):
        if ctx.stop_requested:
            break
        said.append(f"w{k}")
        await ctx.send_chunk(f"w{k}")
        await anyio.sleep(0.01)
    return {"said": said, "stopped": bool(ctx.stop_requested)}


# The gates `gate` runs wait on, by name (this test server's process only).
GATES: dict[str, anyio.Event] = {}


@flow(input=str, output=str, chunk=str)
async def gate(name: str, ctx: FlowContext[str]) -> str:
    """Wait until the gate ``name`` is opened."""
    await ctx.send_chunk("waiting")
    await GATES.setdefault(name, anyio.Event()).wait()
    return f"opened {name}"


FLOWS = [echo, count, text, fail, crash, typed, big, words, gate]


async def bearer_auth(request: Request) -> RequestContext:
    """The test auth scheme described in the module docstring."""
    header = request.headers.get("authorization")
    if header is None:
        return RequestContext()
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token or token == "invalid":
        raise UnauthenticatedError("invalid credentials")
    if token == "denied":
        raise PermissionDeniedError("this user may not run flows")
    return RequestContext(principal=token, data={"user": token})


class DropConnections:
    """Middleware that breaks off streaming responses, on request of the tests."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.left = 0
        self.max_bytes = 2000
        self.rng = random.Random(0)

    def configure(self, count: int, seed: int, max_bytes: int) -> None:
        self.left, self.rng, self.max_bytes = count, random.Random(seed), max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.left <= 0 or scope["path"].startswith("/_test"):
            await self.app(scope, receive, send)
            return
        budget: int | None = None

        async def cutting_send(message: Message) -> None:
            nonlocal budget
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers", []))
                streaming = b"content-length" not in headers and message["status"] == 200
                if streaming and self.left > 0:
                    self.left -= 1
                    budget = self.rng.randrange(1, self.max_bytes)
            elif message["type"] == "http.response.body" and budget is not None:
                body: bytes = message.get("body", b"")
                if len(body) >= budget:
                    await send({**message, "body": body[:budget], "more_body": True})
                    # An exception after the headers makes the server drop the
                    # connection without the final chunk: a network failure.
                    raise ConnectionAbortedError("connection dropped by the test server")
                budget -= len(body)
            await send(message)

        await self.app(scope, receive, cutting_send)


def durable_engine() -> Any:
    """With ``--durable``: an engine (in memory) serving ``durable_answer``, a streaming
    durable flow whose step fails once after streaming half its output."""
    from stream_gateway.durable import (
        DurableContext,
        DurableEngine,
        InMemoryDurableStore,
        RetryPolicy,
        durable_flow,
    )

    attempts: dict[str, int] = {}

    @durable_flow(input=str, output=str, chunk=str)
    async def durable_answer(prompt: str, ctx: DurableContext) -> str:
        await ctx.send_chunk(">")

        async def llm() -> str:
            attempts[ctx.flow_id] = attempts.get(ctx.flow_id, 0) + 1
            await ctx.send_chunk("Hel")
            if attempts[ctx.flow_id] == 1:
                raise RuntimeError("model overloaded")
            await ctx.send_chunk("lo")
            return "Hello"

        retry = RetryPolicy(max_attempts=2, backoff_base=0.0, jitter=0.0)
        return ">" + str(await ctx.run("llm", llm, retry=retry))

    engine = DurableEngine([durable_answer], store=InMemoryDurableStore(), poll_interval=0.02)
    return engine.worker(poll_interval=0.02, lease=5.0)


def build_app(
    manager: StreamManager | None,
    *,
    keep_alive: float = 15.0,
    drain_grace: float = 2.0,
    durable: bool = False,
) -> Starlette:
    """The test app: the gateway at ``/flows``, test controls at ``/_test``."""
    gateway = Gateway(
        FLOWS,
        durable=durable_engine() if durable else None,
        stream_manager=manager,
        context_provider=bearer_auth,
        max_body_bytes=64 * 1024,
        keep_alive_interval=keep_alive,
        drain_grace=drain_grace,
    )
    drops: DropConnections | None = None

    async def set_drops(request: Request) -> JSONResponse:
        body = await request.json()
        assert drops is not None
        seed, max_bytes = int(body.get("seed", 0)), int(body.get("max_bytes", 2000))
        drops.configure(int(body["count"]), seed, max_bytes)
        return JSONResponse({"left": drops.left})

    async def get_drops(request: Request) -> JSONResponse:
        assert drops is not None
        return JSONResponse({"left": drops.left})

    async def open_gate(request: Request) -> JSONResponse:
        GATES.setdefault(request.path_params["name"], anyio.Event()).set()
        return JSONResponse({"opened": request.path_params["name"]})

    async def compact(request: Request) -> JSONResponse:
        assert manager is not None
        report = await manager.compact(request.path_params["stream_id"])
        return JSONResponse(report.to_json())

    app = Starlette(
        routes=[
            Mount("/flows", app=gateway),
            Route("/_test/compact/{stream_id}", compact, methods=["POST"]),
            Route("/_test/drops", set_drops, methods=["POST"]),
            Route("/_test/drops", get_drops, methods=["GET"]),
            Route("/_test/gates/{name}", open_gate, methods=["POST"]),
        ],
        lifespan=gateway.lifespan,
    )
    drops = DropConnections(app.build_middleware_stack())
    app.middleware_stack = drops
    return app


def make_manager(kind: str, db: str | None, lease: float, **options: Any) -> StreamManager | None:
    """A manager by name: ``memory``, ``sqlite`` (file ``db``), ``firestore`` (project
    ``db``, on the emulator named by ``FIRESTORE_EMULATOR_HOST``), ``rtdb`` (database
    URL ``db``), ``redis`` (``db`` is ``<url>#<key prefix>``), ``postgres`` (``db`` is a
    DSN, ``#schema=<name>`` appended) or ``none``. ``options`` go to the manager
    (SQLite: its storage's ``busy_timeout`` too)."""
    if kind == "none":
        return None
    if kind == "memory":
        return InMemoryStreamManager(lease=lease, **options)
    if kind == "sqlite":
        from stream_gateway.streams import SqliteStreamManager

        return SqliteStreamManager(Path(db or "streams.db"), lease=lease, **options)
    if kind == "firestore":
        from stream_gateway_firestore import FirestoreStreamManager

        return FirestoreStreamManager(project=db, lease=lease, **options)
    if kind == "rtdb":
        from stream_gateway_rtdb import RtdbStreamManager

        assert db is not None, "--db names the database URL"
        return RtdbStreamManager(db, lease=lease, **options)
    if kind == "redis":
        from stream_gateway_redis import RedisStreamManager

        assert db is not None, "--db names the Redis URL, then '#' and the key prefix"
        url, _, prefix = db.partition("#")
        return RedisStreamManager(url, prefix=prefix or "sg", lease=lease, **options)
    if kind == "postgres":
        from stream_gateway_postgres import PostgresStreamManager

        assert db is not None, "--db names the DSN"
        dsn, _, schema = db.partition("#schema=")
        return PostgresStreamManager(dsn, schema=schema or "stream_gateway", lease=lease, **options)
    raise SystemExit(f"unknown manager {kind!r}")


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    managers = ["memory", "sqlite", "firestore", "rtdb", "redis", "postgres", "none"]
    parser.add_argument("--manager", default="memory", choices=managers)
    parser.add_argument("--db")
    parser.add_argument("--lease", type=float, default=10.0)
    parser.add_argument("--keep-alive", type=float, default=15.0)
    parser.add_argument("--drain-grace", type=float, default=2.0)
    parser.add_argument("--write-retry-for", type=float, help="the manager's write_retry_for")
    parser.add_argument("--busy-timeout", type=float, help="SQLite's busy_timeout")
    parser.add_argument(
        "--timeout-graceful-shutdown", type=float, help="uvicorn's option of that name"
    )
    parser.add_argument("--log-config", help="uvicorn's --log-config (JSON/YAML/ini)")
    parser.add_argument("--durable", action="store_true", help="also serve durable_answer")
    args = parser.parse_args(argv)
    options: dict[str, Any] = {}
    if args.write_retry_for is not None:
        options["write_retry_for"] = args.write_retry_for
    if args.busy_timeout is not None:
        options["busy_timeout"] = args.busy_timeout
    app = build_app(
        make_manager(args.manager, args.db, args.lease, **options),
        keep_alive=args.keep_alive,
        drain_grace=args.drain_grace,
        durable=args.durable,
    )
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=None if args.log_config else "warning",
        log_config=args.log_config or uvicorn.config.LOGGING_CONFIG,
        timeout_graceful_shutdown=args.timeout_graceful_shutdown,
    )
    server = uvicorn.Server(config)

    async def serve() -> None:
        sockets = [config.bind_socket()]
        port = sockets[0].getsockname()[1]
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, sockets)
            while not server.started:  # noqa: ASYNC110 - uvicorn offers no event
                await anyio.sleep(0.01)
            print(f"flows-app listening on http://{args.host}:{port}", flush=True)

    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    anyio.run(serve)
    sys.exit(0)


if __name__ == "__main__":
    main()
