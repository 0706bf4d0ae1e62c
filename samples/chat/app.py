"""The chat sample: a flow that streams an answer, resumable by stream id.

Run: ``make demo`` (or ``uvicorn samples.chat.app:app``), then open http://127.0.0.1:8000.
``STREAM_DB`` picks the SQLite file (default ``.data/streams.db``).
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.applications import Starlette
from starlette.responses import FileResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from stream_gateway import Gateway
from stream_gateway.streams import SqliteStreamManager

from .flows import chat

HERE = Path(__file__).parent


def build_app(db_path: str | os.PathLike[str] | None = None) -> Starlette:
    """The sample app with its gateway at ``/flows`` on a SQLite stream manager."""
    path = Path(db_path or os.environ.get("STREAM_DB", ".data/streams.db"))
    path.parent.mkdir(parents=True, exist_ok=True)
    gateway = Gateway([chat], stream_manager=SqliteStreamManager(path))

    async def index(request: object) -> FileResponse:
        return FileResponse(HERE / "static" / "index.html")

    return Starlette(
        routes=[
            Route("/", index),
            Mount("/flows", app=gateway),
            Mount("/static", app=StaticFiles(directory=HERE / "static")),
        ],
        lifespan=gateway.lifespan,
    )


app = build_app()
