"""The one request guard and the one rule that makes an error safe for a client."""

from __future__ import annotations

import logging

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from stream_gateway import InternalError, InvalidArgumentError, UnavailableError
from stream_gateway._errors import client_error
from stream_gateway.asgi._http import guarded
from stream_gateway.durable.errors import DurableStoreError, public_error

pytestmark = pytest.mark.anyio


def test_a_user_error_reaches_the_client_as_it_is() -> None:
    error = InvalidArgumentError("n must be positive", details={"n": -1})
    assert client_error(error) is error


def test_any_other_exception_is_internal_and_keeps_its_text_for_operators() -> None:
    error = client_error(KeyError("/srv/secret/path"))
    assert isinstance(error, InternalError)
    assert error.to_json() == {"status": "INTERNAL", "message": "Internal Error"}
    assert error.operator == {"type": "KeyError", "message": "'/srv/secret/path'"}  # type: ignore[attr-defined]


def test_a_store_failure_names_no_backend_detail() -> None:
    failure = DurableStoreError("database is locked: /var/lib/app/durable.db")
    error = client_error(failure)
    assert isinstance(error, UnavailableError)
    assert "durable.db" not in error.message
    # The journal keeps the failure itself; only what goes to a client is hidden.
    assert public_error(failure) is failure


async def test_the_guard_answers_errors_and_logs_what_it_hides(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def user_error(request: Request) -> Response:
        raise InvalidArgumentError("bad input")

    async def bug(request: Request) -> Response:
        raise RuntimeError("token=hunter2")

    app = Starlette(
        routes=[
            Route("/user", guarded(user_error, "user endpoint")),
            Route("/bug", guarded(bug, "bug endpoint")),
        ]
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        with caplog.at_level(logging.ERROR, logger="stream_gateway.http"):
            user = await http.get("/user")
            assert caplog.records == []
            hidden = await http.get("/bug")
    assert user.status_code == 400
    assert user.json() == {"error": {"status": "INVALID_ARGUMENT", "message": "bad input"}}
    assert hidden.status_code == 500
    assert hidden.json() == {"error": {"status": "INTERNAL", "message": "Internal Error"}}
    assert "hunter2" not in hidden.text
    [record] = caplog.records
    assert record.getMessage() == "bug endpoint failed"
    assert record.exc_info is not None and "hunter2" in str(record.exc_info[1])
