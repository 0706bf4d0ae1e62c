"""``offset=now`` / ``x-genkit-stream-offset: now``: join a stream at its live tail."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest

from stream_gateway import FlowContext, Gateway, flow
from stream_gateway.streams import StreamManager
from tests.backends import BackendHarness
from tests.gateway.conftest import serve

pytestmark = pytest.mark.anyio
STREAM = {"accept": "text/event-stream", "content-type": "application/json"}


async def test_joining_now_skips_what_was_said(harness: BackendHarness) -> None:
    release = anyio.Event()

    @flow
    async def talk(data: Any, ctx: FlowContext[Any]) -> str:
        for word in ("one", "two", "three"):
            await ctx.send_chunk(word)
        await release.wait()
        await ctx.send_chunk("four")
        return "end"

    manager = StreamManager(harness.new_storage())
    async with (
        serve(Gateway([talk], stream_manager=manager)) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
        http.stream("POST", "/talk", json={}, headers=STREAM) as first,
    ):
        stream_id = first.headers["x-genkit-stream-id"]
        with anyio.fail_after(10):
            while (await manager.info(stream_id)).length < 3:  # noqa: ASYNC110 - no event to await
                await anyio.sleep(0.01)
        join = {**STREAM, "x-genkit-stream-id": stream_id, "x-genkit-stream-offset": "now"}
        async with (
            http.stream("POST", "/talk", json={}, headers=join) as genkit,
            http.stream("GET", f"/talk/streams/{stream_id}?offset=now") as sse,
        ):
            assert genkit.status_code == 200 and sse.status_code == 200
            release.set()
            genkit_text = (await genkit.aread()).decode()
            sse_text = (await sse.aread()).decode()
        await first.aread()
        # Once finished, "now" is the end: only the result.
        after = await http.post("/talk", json={}, headers=join)
        bad = await http.post("/talk", json={}, headers={**join, "x-genkit-stream-offset": "later"})
    assert genkit_text == 'data: {"message":"four"}\n\ndata: {"result":"end"}\n\n'
    assert sse_text.replace(": keep-alive\n\n", "").startswith("id: 3\nevent: chunk\n")
    assert '"four"' in sse_text and '"one"' not in sse_text
    assert after.text == 'data: {"result":"end"}\n\n'
    assert bad.status_code == 400
    assert '"now"' in bad.json()["error"]["message"]
