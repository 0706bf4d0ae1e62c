"""The durable approval sample: HTTP routes plus a worker in the app's lifespan.

Run: ``uvicorn samples.approval.app:app`` and follow ``samples/approval/README.md``.

State lives in SQLite at ``.data/approval.sqlite3``, so scheduled flows survive
restarts of the server. ``APPROVAL_DB`` names another store: a SQLite path or a store
URL (`store_from_url`: ``postgresql://user@host/db#schema=approval`` with
stream-gateway-postgres installed, ``firestore://project`` with
stream-gateway-firestore). Callers name themselves with an
``X-User`` header (a stand-in for real auth): each user sees only their own flows.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount

from stream_gateway import RequestContext, UnauthenticatedError
from stream_gateway.durable import DurableEngine, DurableFlow, durable_routes, store_from_url

from .flows import FLOWS, pending_digest


def make_engine(
    db: str | None = None, *, more: Sequence[DurableFlow[Any, Any]] = ()
) -> DurableEngine:
    """The engine on the sample's store, with the sample's flows and ``more``: ``db`` or
    ``APPROVAL_DB``, a SQLite path or a store URL (default ``.data/approval.sqlite3``)."""
    location = db or os.environ.get("APPROVAL_DB", ".data/approval.sqlite3")
    return DurableEngine([*FLOWS, *more], store=store_from_url(location))


async def user_from_header(request: Request) -> RequestContext:
    """Demo auth: the ``X-User`` header is the principal. Use real auth in an app."""
    user = request.headers.get("x-user")
    if not user:
        raise UnauthenticatedError("send an X-User header")
    return RequestContext(principal=user)


def make_app(engine: DurableEngine | None = None) -> Starlette:
    """The app: ``/durable/...`` routes, and a worker while the app is up."""
    engine = engine or make_engine()

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        async with engine, engine.worker(poll_interval=0.2):
            # Idempotent: every start ensures the same schedule (one run per tick,
            # however many app processes run).
            await engine.ensure_schedule(
                pending_digest, id="pending-digest", cron="0 9 * * mon-fri", timezone="Europe/Paris"
            )
            yield

    routes = [Mount("/durable", durable_routes(engine, context_provider=user_from_header))]
    return Starlette(routes=routes, lifespan=lifespan)


app = make_app()
