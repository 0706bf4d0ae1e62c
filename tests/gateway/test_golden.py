"""The golden frames: our encoders produce them, our Python client parses them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stream_gateway._json import dumps
from stream_gateway.asgi import genkit_frames, sse_frames
from stream_gateway.asgi.frames import KEEP_ALIVE
from stream_gateway.client import _parse_frame
from stream_gateway.streams import ChunkEvent, ErrorEvent, ResultEvent, StreamEvent

GOLDEN = json.loads((Path(__file__).parent.parent / "fixtures" / "golden_frames.json").read_text())
CASES = GOLDEN["cases"]


def to_events(model: list[dict[str, Any]]) -> list[StreamEvent]:
    events: list[StreamEvent] = []
    for item in model:
        if "chunk" in item:
            events.append(ChunkEvent(item["offset"], dumps(item["chunk"])))
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
    parsed = [_parse_frame(f) for f in frames]
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
