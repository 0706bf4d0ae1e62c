"""The golden frames: our encoders produce them, our Python client parses them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from stream_gateway._json import dumps
from stream_gateway.asgi import genkit_frames, sse_frames
from stream_gateway.asgi.frames import KEEP_ALIVE, genkit_frames_with_offsets
from stream_gateway.client import Reset, _parse_frame, stream_flow
from stream_gateway.streams import ChunkEvent, ErrorEvent, ResetEvent, ResultEvent, StreamEvent

GOLDEN = json.loads((Path(__file__).parent.parent / "fixtures" / "golden_frames.json").read_text())
CASES = GOLDEN["cases"]
DURABLE_CASES = GOLDEN["durableCases"]


def to_events(model: list[dict[str, Any]]) -> list[StreamEvent]:
    events: list[StreamEvent] = []
    for item in model:
        if "chunk" in item:
            events.append(ChunkEvent(item["offset"], dumps(item["chunk"])))
        elif "reset" in item:
            events.append(ResetEvent(item["offset"], item["reset"]))
        elif "result" in item:
            events.append(ResultEvent(dumps(item["result"])))
        else:
            error = item["error"]
            events.append(ErrorEvent(error["status"], error["message"], error.get("details")))
    return events


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_encoders_match_golden_bytes(case: dict[str, Any]) -> None:
    events = to_events(case["events"])
    assert genkit_frames(events) == case["genkit"].encode()
    assert sse_frames(events) == case["sse"].encode()


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_python_client_parses_golden_genkit_frames(case: dict[str, Any]) -> None:
    frames = case["genkit"].encode()[:-2].split(b"\n\n")
    parsed = [_parse_frame(f)[:2] for f in frames]
    expected: list[tuple[str, Any]] = []
    for item in case["events"]:
        if "chunk" in item:
            expected.append(("message", item["chunk"]))
        elif "result" in item:
            expected.append(("result", item["result"]))
    assert [p for p in parsed if p[0] != "error"] == expected
    errors = [p[1] for p in parsed if p[0] == "error"]
    model_errors = [i["error"] for i in case["events"] if "error" in i]
    assert [e.to_json() for e in errors] == model_errors


def test_keep_alive_is_an_sse_comment() -> None:
    assert KEEP_ALIVE == GOLDEN["keepAlive"].encode() == b": keep-alive\n\n"


def test_frames_never_contain_stray_blank_lines() -> None:
    for case in CASES:
        for protocol in ("genkit", "sse"):
            frames = case[protocol][:-2].split("\n\n")
            assert all(frame and not frame.startswith("\n") for frame in frames)


@pytest.mark.parametrize("case", CASES + DURABLE_CASES, ids=lambda c: c["name"])
def test_offset_frames_for_our_clients(case: dict[str, Any]) -> None:
    events = to_events(case["events"])
    offsets = genkit_frames_with_offsets(events)
    if "genkitOffsets" in case:
        assert offsets == case["genkitOffsets"].encode()
    # Every chunk and reset of the SSE events comes with its offset.
    parsed = [_parse_frame(f) for f in offsets[:-2].split(b"\n\n")]
    assert [(k, o) for k, _, o in parsed if k in ("message", "reset")] == [
        ("reset" if "reset" in e else "message", e["offset"])
        for e in case["events"]
        if "offset" in e
    ]


@pytest.mark.parametrize("case", DURABLE_CASES, ids=lambda c: c["name"])
def test_durable_encoders_match_golden_bytes(case: dict[str, Any]) -> None:
    events = to_events(case["events"])
    assert sse_frames(events) == case["sse"].encode()
    assert genkit_frames(events) == case["genkit"].encode()  # Genkit's client: no resets


@pytest.mark.anyio
@pytest.mark.parametrize(
    "case", [c for c in DURABLE_CASES if c["view"] is not None], ids=lambda c: c["name"]
)
async def test_python_client_renders_the_text_once(case: dict[str, Any]) -> None:
    """The Python client, fed the golden frames, drops what a reset retracts."""
    body = case["genkitOffsets"].encode()

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["x-stream-resets"] == "1"
        return httpx.Response(200, content=body, headers={"x-genkit-stream-id": "s" * 22})

    shown: list[Any] = []
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        stream = stream_flow("http://test/flow", None, http=http)
        async for item in stream:
            if isinstance(item, Reset):
                del shown[len(shown) - item.dropped :]
            else:
                shown.append(item)
        assert await stream.result() == case["view"]
    assert "".join(shown) == case["view"]
