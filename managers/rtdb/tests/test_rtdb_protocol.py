"""The REST protocol in detail: credentials, redirects, error mapping, conditional create.

Most of these use `httpx.MockTransport` to play the production server's part (HTTPS,
OAuth2 tokens, redirects to another host), which the stand-in does not do.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import httpx
import pytest

from stream_gateway import (
    GatewayError,
    InternalError,
    InvalidArgumentError,
    PermissionDeniedError,
    StreamExistsError,
    UnavailableError,
)
from stream_gateway.streams import StreamRecord
from stream_gateway_rtdb import RtdbStreamManager, RtdbStreamStorage
from stream_gateway_rtdb._auth import EMULATOR_HOST_ENV

from rtdb_support import FakeCredential, Site, chunks_of, collect

pytestmark = pytest.mark.anyio

PROD_URL = "https://my-db.firebaseio.com"
DONE_META = {"flow": "f", "status": "done", "length": 0, "created_at": 1, "expires_at": 9e9}

Handler = Callable[[httpx.Request], httpx.Response]
# firebase-admin ships no type information: imported as a plain module.
firebase_admin = importlib.import_module("firebase_admin")
CredentialBase: Any = importlib.import_module("firebase_admin.credentials").Base


@pytest.fixture(autouse=True)
def production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(EMULATOR_HOST_ENV, raising=False)


@asynccontextmanager
async def mocked(handler: Handler, credential: object) -> AsyncIterator[RtdbStreamStorage]:
    """A production storage whose requests ``handler`` answers."""
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        storage = RtdbStreamStorage(PROD_URL, http=http, credential=credential)
        await storage.start()
        try:
            yield storage
        finally:
            await storage.close()


async def test_requests_carry_the_credential_token_and_follow_redirects() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "my-db.firebaseio.com":
            moved = str(request.url.copy_with(host="s-usc1a-nss-1.firebaseio.com"))
            return httpx.Response(307, headers={"location": moved})
        return httpx.Response(200, json=DONE_META)

    async with mocked(handler, credential=FakeCredential()) as storage:
        record = await storage.load("a-stream-id-0000000")
    assert record is not None and record.status == "done"
    assert [r.url.host for r in seen] == ["my-db.firebaseio.com", "s-usc1a-nss-1.firebaseio.com"]
    assert all(r.headers["authorization"] == "Bearer token-1" for r in seen)
    assert seen[0].url.path == "/streams/meta/a-stream-id-0000000.json"


async def test_a_401_refreshes_the_token_once() -> None:
    tokens: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        tokens.append(request.headers["authorization"])
        if request.headers["authorization"] == "Bearer token-1":
            return httpx.Response(401, json={"error": "Auth token is expired"})
        return httpx.Response(200, json=None)

    credential = FakeCredential()
    async with mocked(handler, credential=credential) as storage:
        assert await storage.load("a-stream-id-0000000") is None
    assert tokens == ["Bearer token-1", "Bearer token-2"]


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, InvalidArgumentError),
        (401, PermissionDeniedError),
        (403, PermissionDeniedError),
        (404, InternalError),
        (429, UnavailableError),
        (500, UnavailableError),
        (503, UnavailableError),
    ],
)
async def test_statuses_map_to_errors(status: int, error: type[GatewayError]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"error": "nope"})

    async with mocked(handler, credential=FakeCredential()) as storage:
        with pytest.raises(error, match="nope"):
            await storage.read("a-stream-id-0000000", 0, 10)


async def test_connection_failures_are_unavailable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with mocked(handler, credential=FakeCredential()) as storage:
        with pytest.raises(UnavailableError, match="unreachable"):
            await storage.append("a-stream-id-0000000", 0, [b"1"])


async def test_the_app_credential_is_used_in_production() -> None:
    class AppCredential(CredentialBase):  # type: ignore[misc]
        def get_access_token(self) -> object:
            return FakeCredential().get_access_token()

    app = firebase_admin.initialize_app(AppCredential(), name="sg-rtdb-test-app")
    try:
        storage = RtdbStreamStorage(PROD_URL, app=app)
        await storage.start()
        assert await storage.client.tokens.token() == "token-1"
        await storage.close()
    finally:
        firebase_admin.delete_app(app)
    with pytest.raises(ValueError, match="default Firebase app"):
        await RtdbStreamStorage(PROD_URL).start()


async def test_the_emulator_variable_redirects_an_https_url(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(EMULATOR_HOST_ENV, site.server.url.removeprefix("http://"))
    async with RtdbStreamManager(f"https://{site.namespace}.firebaseio.com") as manager:
        writer = await manager.open()
        await writer.write("via the emulator variable")
        await writer.done(None)
        assert chunks_of(await collect(manager, writer.stream_id)) == [
            (0, "via the emulator variable")
        ]
    assert (await site.dump(f"streams/meta/{writer.stream_id}"))["status"] == "done"


async def test_create_is_conditional_and_a_retried_create_succeeds(site: Site) -> None:
    storage = RtdbStreamStorage(site.url)
    await storage.start()
    try:
        record = StreamRecord("retried-create-000001", "f", 1.0, 1.0, 99.0, lease_until=5.0)
        await storage.create(record)
        await storage.create(record)  # the same data: our own attempt whose answer was lost
        with pytest.raises(StreamExistsError):
            await storage.create(replace(record, flow="another"))
        stored = await site.dump(f"streams/meta/{record.stream_id}")
        assert stored["flow"] == "f"
    finally:
        await storage.close()
