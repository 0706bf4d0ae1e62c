"""The chat sample: a flow that streams an answer, resumable by stream id.

Run: ``make demo`` (or ``uvicorn --factory samples.chat.app:demo_app``), then open
http://127.0.0.1:8000. The demo also serves the durable approval sample's flows
(``/flows/durable/...``), the agent sample (a streaming durable flow, its page at
``/agent``) and the operator dashboard at ``/operator/``; it prints the operator's
login token at start (``OPERATOR_TOKEN`` chooses it).

``STREAM_BACKEND`` picks the stream manager: ``sqlite`` (default; ``STREAM_DB`` names
the file, default ``.data/streams.db``), ``memory``, ``firestore`` (needs
``FIRESTORE_EMULATOR_HOST`` or Google credentials, and ``GOOGLE_CLOUD_PROJECT``) or
``rtdb`` (``RTDB_URL``, or the emulator/stand-in named by
``FIREBASE_DATABASE_EMULATOR_HOST``), ``redis`` (``REDIS_URL``, default
``redis://127.0.0.1:6379/0``) or ``postgres`` (``POSTGRES_DSN``, a libpq URI).
``CHAT_TOKENS_PER_SECOND`` paces the fake LLM (default 8) and ``CHAT_OPENAI_BASE_URL``
replaces it with a real one (see `llm`).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.responses import FileResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from stream_gateway import Gateway, InMemoryStreamManager, StreamManager
from stream_gateway.durable import DurableEngine, Worker
from stream_gateway.operator import operator_app, token_auth
from stream_gateway.streams import SqliteStreamManager

from ..aisdk.app import ProtocolMounts
from .flows import chat

HERE = Path(__file__).parent


def make_manager(backend: str, db_path: str | os.PathLike[str] | None = None) -> StreamManager:
    """The stream manager named by ``backend`` (see the module docstring)."""
    if backend == "sqlite":
        return SqliteStreamManager(db_path or os.environ.get("STREAM_DB", ".data/streams.db"))
    if backend == "memory":
        return InMemoryStreamManager()
    if backend == "firestore":
        from stream_gateway_firestore import FirestoreStreamManager

        project = os.environ.get("GOOGLE_CLOUD_PROJECT", "stream-gateway-demo")
        return FirestoreStreamManager(project=project)
    if backend == "rtdb":
        from stream_gateway_rtdb import RtdbStreamManager

        emulator = os.environ.get("FIREBASE_DATABASE_EMULATOR_HOST")
        default = f"http://{emulator}?ns=stream-gateway-demo" if emulator else None
        url = os.environ.get("RTDB_URL", default)
        if url is None:
            raise SystemExit("STREAM_BACKEND=rtdb needs RTDB_URL (or an emulator host)")
        return RtdbStreamManager(url)
    if backend == "redis":
        from stream_gateway_redis import RedisStreamManager

        return RedisStreamManager(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    if backend == "postgres":
        from stream_gateway_postgres import PostgresStreamManager

        dsn = os.environ.get("POSTGRES_DSN")
        if not dsn:
            raise SystemExit("STREAM_BACKEND=postgres needs POSTGRES_DSN (postgresql://...)")
        return PostgresStreamManager(dsn)
    raise SystemExit(
        f"unknown STREAM_BACKEND {backend!r}: use sqlite, memory, firestore, rtdb, redis"
        " or postgres"
    )


def build_app(
    db_path: str | os.PathLike[str] | None = None,
    backend: str | None = None,
    *,
    durable: DurableEngine | Worker | None = None,
    operator_token: str | None = None,
) -> Starlette:
    """The sample app with its gateway at ``/flows``; on the same manager, the AI SDK
    sample (``/aisdk/``, its ``useChat`` endpoint ``/api/chat``) and Durable Streams
    (``/ds/``). With ``durable`` (an engine, or a worker of one to choose its lease),
    the gateway also serves that engine's flows (and runs a worker), and the agent
    sample's page is at ``/agent`` (its flow must be among the engine's); with
    ``operator_token``, the operator dashboard is at ``/operator/``."""
    engine = durable.engine if isinstance(durable, Worker) else durable
    manager = make_manager(backend or os.environ.get("STREAM_BACKEND", "sqlite"), db_path)
    gateway = Gateway([chat], stream_manager=manager, durable=durable)
    protocols = ProtocolMounts(manager)
    operator: list[Mount] = []
    if operator_token is not None:
        dashboard = operator_app(
            engine=engine, streams=manager, auth=token_auth({operator_token: "demo-operator"})
        )
        operator.append(Mount("/operator", app=dashboard))

    @asynccontextmanager
    async def lifespan(app: object) -> AsyncIterator[None]:
        async with gateway.lifespan(app), protocols.lifespan():
            if engine is not None:
                from ..approval.flows import pending_digest

                await engine.ensure_schedule(
                    pending_digest, id="pending-digest", cron="0 9 * * mon-fri"
                )
            yield

    async def index(request: object) -> FileResponse:
        return FileResponse(HERE / "static" / "index.html")

    async def agent_page(request: object) -> FileResponse:
        return FileResponse(HERE.parent / "agent" / "static" / "index.html")

    agent = [Route("/agent", agent_page)] if durable is not None else []
    return Starlette(
        routes=[
            Route("/", index),
            *agent,
            Mount("/flows", app=gateway),
            Mount("/static", app=StaticFiles(directory=HERE / "static")),
            # The browser client (@stream-gateway/client), served from its source.
            Mount("/client", app=StaticFiles(directory=HERE.parents[1] / "client_js" / "src")),
            *protocols.routes,
            *operator,
        ],
        lifespan=lifespan,
    )


def demo_app() -> Starlette:
    """What ``make demo`` serves: `build_app` with the durable approval sample's flows
    and the agent sample's (state in ``APPROVAL_DB``, default
    ``.data/approval.sqlite3``) and the operator dashboard, whose login token
    (``OPERATOR_TOKEN``, else a fresh random one) is printed here."""
    from ..agent.flows import research
    from ..approval.app import make_engine

    token = os.environ.get("OPERATOR_TOKEN") or secrets.token_urlsafe(18)
    print(f"operator dashboard: /operator/ (log in with the token {token})", flush=True)
    return build_app(durable=make_engine(more=[research]), operator_token=token)
