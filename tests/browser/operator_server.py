"""An app with the operator dashboard, for the browser tests.

Run: ``python -m tests.browser.operator_server --port 0 --token TOKEN``; prints
``operator-app listening on http://127.0.0.1:PORT`` when ready.

It serves a `Gateway` at ``/flows`` (callers name themselves with ``X-User``) with a
streaming ``agent`` flow (a chunk every 50 ms until stopped, at most 2,000) and
durable flows (``approval``: an interrupt with a JSON Schema; ``fragile``: a step that
fails until ``POST /_test/heal``), and `operator_app` at ``/operator`` behind
`token_auth` with ``--token``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import anyio
from pydantic import BaseModel, Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from stream_gateway import (
    FlowContext,
    Gateway,
    InMemoryStreamManager,
    RequestContext,
    UnauthenticatedError,
    flow,
)
from stream_gateway.durable import (
    DurableContext,
    DurableEngine,
    InMemoryDurableStore,
    RetryPolicy,
    durable_flow,
)
from stream_gateway.operator import operator_app, token_auth

HEALTH = {"healed": False}


class Decision(BaseModel):
    """The manager's answer."""

    approved: bool
    comment: str = Field(default="", max_length=200)


@flow(input=str, output=str, chunk=str)
async def agent(task: str, ctx: FlowContext[str]) -> str:
    """Works on ``task`` a step at a time until asked to stop."""
    done: list[str] = []
    for n in range(2000):
        if ctx.stop_requested:
            break
        piece = f"step {n} of {task}; "
        done.append(piece)
        await ctx.send_chunk(piece)
        await anyio.sleep(0.05)
    return "".join(done)


@durable_flow(input=float, output=dict[str, Any])
async def approval(amount: float, ctx: DurableContext) -> dict[str, Any]:
    """Waits for a manager's decision on ``amount``."""
    decision: Decision = await ctx.interrupt("decide", Decision)
    return {"amount": amount, "approved": decision.approved, "comment": decision.comment}


def call_upstream() -> str:
    if not HEALTH["healed"]:
        raise RuntimeError("upstream refused the call: quota exhausted")
    return "upstream answered"


@durable_flow(output=str)
async def fragile(_: None, ctx: DurableContext) -> str:
    """One call to a service that fails until healed."""
    answer: str = await ctx.run("upstream", call_upstream, retry=RetryPolicy(max_attempts=1))
    return answer


async def user(request: Request) -> RequestContext:
    name = request.headers.get("x-user")
    if not name:
        raise UnauthenticatedError("send an X-User header")
    return RequestContext(principal=name)


def build_app(token: str) -> Starlette:
    engine = DurableEngine([approval, fragile], store=InMemoryDurableStore(), poll_interval=0.05)
    streams = InMemoryStreamManager()
    gateway = Gateway(
        [agent],
        stream_manager=streams,
        context_provider=user,
        durable=engine.worker(poll_interval=0.05),
    )

    async def heal(request: Request) -> JSONResponse:
        HEALTH["healed"] = True
        return JSONResponse({"healed": True})

    return Starlette(
        routes=[
            Route("/_test/heal", heal, methods=["POST"]),
            gateway.route("/flows"),
            Mount(
                "/operator",
                operator_app(engine=engine, streams=streams, auth=token_auth({token: "ops"})),
            ),
        ],
        lifespan=gateway.lifespan,
    )


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", required=True)
    args = parser.parse_args(argv)
    config = uvicorn.Config(
        build_app(args.token), host=args.host, port=args.port, log_level="warning"
    )
    server = uvicorn.Server(config)

    async def serve() -> None:
        sockets = [config.bind_socket()]
        port = sockets[0].getsockname()[1]
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, sockets)
            while not server.started:  # noqa: ASYNC110 - uvicorn offers no event
                await anyio.sleep(0.01)
            print(f"operator-app listening on http://{args.host}:{port}", flush=True)

    anyio.run(serve)
    sys.exit(0)


if __name__ == "__main__":
    main()
