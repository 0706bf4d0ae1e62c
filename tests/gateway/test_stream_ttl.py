"""A stream's TTL, chosen by its flow (``stream_ttl``) or by the start request
(``x-stream-ttl``), within the manager's ``max_ttl``."""

from __future__ import annotations

import httpx
import pytest

from stream_gateway import FlowContext, Gateway, InMemoryStreamManager, flow
from tests.gateway.conftest import serve
from tests.gateway.test_resume import STREAM

pytestmark = pytest.mark.anyio


@flow(input=str, output=str, chunk=str)
async def echo(text: str, ctx: FlowContext[str]) -> str:
    await ctx.send_chunk(text)
    return text


@flow(input=str, output=str, chunk=str, stream_ttl=600.0)
async def kept(text: str, ctx: FlowContext[str]) -> str:
    await ctx.send_chunk(text)
    return text


async def _start(http: httpx.AsyncClient, url: str, **headers: str) -> httpx.Response:
    response = await http.post(url, json={"data": "hi"}, headers={**STREAM, **headers})
    await response.aread()
    return response


async def test_the_flow_or_the_request_chooses_the_ttl() -> None:
    manager = InMemoryStreamManager(ttl=60.0, max_ttl=3600.0)
    async with serve(Gateway([echo, kept], stream_manager=manager)) as base:
        async with httpx.AsyncClient(timeout=30) as http:
            ttls = {}
            for name, headers in (
                ("echo", {}),
                ("kept", {}),
                ("echo", {"x-stream-ttl": "1800"}),
                ("kept", {"x-stream-ttl": "30"}),
            ):
                response = await _start(http, f"{base}/{name}", **headers)
                assert response.status_code == 200
                record = await manager.info(response.headers["x-genkit-stream-id"])
                ttls[(name, headers.get("x-stream-ttl"))] = record.expires_at - record.updated_at
            assert ttls == pytest.approx(
                {("echo", None): 60.0, ("kept", None): 600.0, ("echo", "1800"): 1800.0,
                 ("kept", "30"): 30.0}, abs=0.01,
            )  # fmt: skip

            too_long = await _start(http, f"{base}/echo", **{"x-stream-ttl": "7200"})
            assert too_long.status_code == 400
            error = too_long.text
            assert "above this server's maximum of 3600s" in error
            for bad in ("soon", "-5", "nan"):
                refused = await _start(http, f"{base}/echo", **{"x-stream-ttl": bad})
                assert refused.status_code == 400 and "x-stream-ttl" in refused.text


def test_a_flow_ttl_must_be_positive() -> None:
    with pytest.raises(ValueError, match="stream_ttl"):

        @flow(stream_ttl=0)
        async def never(text: str, ctx: FlowContext[None]) -> str:
            return text
