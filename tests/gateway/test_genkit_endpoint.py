"""The Genkit-compatible endpoint, byte for byte, over a real server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from stream_gateway._json import loads
from tests.gateway.conftest import Live, StartLive

pytestmark = pytest.mark.anyio

STREAM = {"accept": "text/event-stream", "content-type": "application/json"}
JSON = {"content-type": "application/json"}


async def post_stream(live: Live, flow: str, data: object, **headers: str) -> httpx.Response:
    body = {"data": data}
    return await live.http.post(live.flow(flow), json=body, headers={**STREAM, **headers})


def frames(body: bytes) -> list[bytes]:
    assert body.endswith(b"\n\n"), body[-50:]
    return [f + b"\n\n" for f in body[:-2].split(b"\n\n")]


async def test_streams_chunks_then_result(live: Live) -> None:
    response = await post_stream(live, "count", {"n": 3})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    stream_id = response.headers["x-genkit-stream-id"]
    assert len(stream_id) >= 21
    assert response.content == (
        b'data: {"message":{"i":0}}\n\n'
        b'data: {"message":{"i":1}}\n\n'
        b'data: {"message":{"i":2}}\n\n'
        b'data: {"result":{"total":3}}\n\n'
    )


async def test_stream_query_parameter_also_streams(live: Live) -> None:
    response = await live.http.post(live.flow("text") + "?stream=true", json={"data": "ab"})
    assert (
        response.content
        == b'data: {"message":"a"}\n\ndata: {"message":"b"}\n\ndata: {"result":"ab"}\n\n'
    )


async def test_reconnect_replays_from_zero_and_from_offset(live: Live) -> None:
    first = await post_stream(live, "count", {"n": 5})
    stream_id = first.headers["x-genkit-stream-id"]

    again = await post_stream(live, "count", None, **{"x-genkit-stream-id": stream_id})
    assert again.status_code == 200
    assert again.headers["x-genkit-stream-id"] == stream_id
    assert again.content == first.content

    tail = await post_stream(
        live, "count", None, **{"x-genkit-stream-id": stream_id, "x-genkit-stream-offset": "3"}
    )
    assert tail.content == (
        b'data: {"message":{"i":3}}\n\ndata: {"message":{"i":4}}\n\n'
        b'data: {"result":{"total":5}}\n\n'
    )


async def test_unknown_stream_is_204(live: Live) -> None:
    response = await post_stream(live, "count", None, **{"x-genkit-stream-id": "A" * 22})
    assert (response.status_code, response.content) == (204, b"")


async def test_stream_of_another_flow_is_unknown(live: Live) -> None:
    first = await post_stream(live, "count", {"n": 1})
    other = await post_stream(
        live, "text", None, **{"x-genkit-stream-id": first.headers["x-genkit-stream-id"]}
    )
    assert other.status_code == 204


async def test_error_mid_stream(live: Live) -> None:
    response = await post_stream(
        live, "fail", {"after": 2, "status": "PERMISSION_DENIED", "message": "no"}
    )
    assert frames(response.content) == [
        b'data: {"message":0}\n\n',
        b'data: {"message":1}\n\n',
        b'error: {"error":{"status":"PERMISSION_DENIED","message":"no","details":{"after":2}}}\n\n',
    ]


async def test_unexpected_exception_is_internal_without_details(
    live: Live, caplog: pytest.LogCaptureFixture
) -> None:
    response = await post_stream(live, "crash", None)
    assert response.content.endswith(
        b'error: {"error":{"status":"INTERNAL","message":"Internal Error"}}\n\n'
    )
    assert b"secret" not in response.content
    assert "secret internal detail" in caplog.text


async def test_non_streaming_result_and_errors(live: Live) -> None:
    ok = await live.http.post(live.flow("echo"), json={"data": {"a": [1, "x"]}})
    assert (ok.status_code, ok.content) == (200, b'{"result":{"a":[1,"x"]}}')
    absent = await live.http.post(live.flow("echo"), json={})
    assert absent.json() == {"result": None}
    empty = await live.http.post(live.flow("echo"), headers=JSON)
    assert empty.json() == {"result": None}
    # No JSON content type, even with no body: no plain cross-site form starts a flow.
    assert (await live.http.post(live.flow("echo"))).status_code == 415
    failed = await live.http.post(
        live.flow("fail"), json={"data": {"status": "NOT_FOUND", "message": "gone"}}
    )
    assert failed.status_code == 404
    assert failed.json() == {
        "error": {"status": "NOT_FOUND", "message": "gone", "details": {"after": 0}}
    }
    crashed = await live.http.post(live.flow("crash"), json={"data": None})
    assert crashed.status_code == 500
    assert crashed.json() == {"error": {"status": "INTERNAL", "message": "Internal Error"}}


async def test_schema_invalid_input(live: Live) -> None:
    for data in [{"name": "x"}, {"name": "x", "age": -1}, "text", None]:
        response = await live.http.post(live.flow("typed"), json={"data": data})
        assert response.status_code == 400
        assert response.json()["error"]["status"] == "INVALID_ARGUMENT"
        streamed = await post_stream(live, "typed", data)
        assert streamed.status_code == 400
    good = await live.http.post(live.flow("typed"), json={"data": {"name": "Ada", "age": 36}})
    assert good.json() == {"result": "Hello Ada, 36"}


async def test_unicode_survives(live: Live) -> None:
    text = 'héllo 😀 漢字\n"q"'
    response = await post_stream(live, "text", text)
    chunks = [loads(f[6:])["message"] for f in frames(response.content)[:-1]]
    assert "".join(chunks) == text


async def test_no_manager_streams_attached_and_reconnect_is_204(start_live: StartLive) -> None:
    async with start_live(manager=False) as live:
        response = await post_stream(live, "count", {"n": 2})
        assert "x-genkit-stream-id" not in response.headers
        assert response.content == (
            b'data: {"message":{"i":0}}\n\ndata: {"message":{"i":1}}\n\n'
            b'data: {"result":{"total":2}}\n\n'
        )
        reconnect = await post_stream(live, "count", None, **{"x-genkit-stream-id": "B" * 22})
        assert reconnect.status_code == 204
        sse = await live.http.get(live.flow("count") + "/streams/" + "B" * 22)
        assert sse.status_code == 404
        crashed = await post_stream(live, "crash", None)
        assert crashed.content.endswith(
            b'error: {"error":{"status":"INTERNAL","message":"Internal Error"}}\n\n'
        )


async def test_oversize_chunk_ends_stream_with_resource_exhausted(start_live: StartLive) -> None:
    async with start_live(max_chunk_bytes=1000) as live:
        response = await post_stream(live, "big", 5000)
        assert response.status_code == 200
        last = frames(response.content)[-1]
        assert last.startswith(b'error: {"error":{"status":"RESOURCE_EXHAUSTED"')
        small = await post_stream(live, "big", 10)
        assert frames(small.content)[-1] == b'data: {"result":10}\n\n'


async def test_stream_length_limit(start_live: StartLive) -> None:
    async with start_live(max_stream_chunks=5) as live:
        response = await post_stream(live, "count", {"n": 10})
        parts = frames(response.content)
        assert len(parts) == 6
        assert parts[-1].startswith(b'error: {"error":{"status":"RESOURCE_EXHAUSTED"')


async def test_auth_runs_on_every_request_and_owns_streams(live: Live) -> None:
    alice = {"authorization": "Bearer alice"}
    started = await post_stream(live, "count", {"n": 2}, **alice)
    stream_id = started.headers["x-genkit-stream-id"]
    reconnect = {"x-genkit-stream-id": stream_id}

    assert (await post_stream(live, "count", None, **reconnect, **alice)).status_code == 200
    bob = await post_stream(live, "count", None, **reconnect, authorization="Bearer bob")
    assert bob.status_code == 204
    anonymous = await post_stream(live, "count", None, **reconnect)
    assert anonymous.status_code == 204
    invalid = await post_stream(live, "count", None, **reconnect, authorization="Bearer invalid")
    assert invalid.status_code == 401
    assert invalid.json()["error"]["status"] == "UNAUTHENTICATED"
    denied = await post_stream(live, "count", {"n": 1}, authorization="Bearer denied")
    assert denied.status_code == 403
    sse_bob = await live.http.get(
        live.flow("count") + f"/streams/{stream_id}", headers={"authorization": "Bearer bob"}
    )
    assert sse_bob.status_code == 404
    cancel_bob = await live.http.delete(
        live.flow("count") + f"/streams/{stream_id}", headers={"authorization": "Bearer bob"}
    )
    assert cancel_bob.status_code == 404


async def test_bad_requests_get_clear_4xx(live: Live) -> None:
    url = live.flow("echo")
    cases: list[tuple[dict[str, object], int, str]] = [
        ({"content": b"{bad", "headers": JSON}, 400, "INVALID_ARGUMENT"),
        ({"content": b"[1,2]", "headers": JSON}, 400, "INVALID_ARGUMENT"),
        (
            {"content": b'{"data": 1}', "headers": {"content-type": "text/plain"}},
            415,
            "INVALID_ARGUMENT",
        ),
        ({"content": b"x" * 70_000, "headers": JSON}, 413, "RESOURCE_EXHAUSTED"),
        ({"content": b"\xff\xfe", "headers": JSON}, 400, "INVALID_ARGUMENT"),
        ({"headers": {**STREAM, "x-genkit-stream-id": "../../etc"}}, 400, "INVALID_ARGUMENT"),
        (
            {"headers": {**STREAM, "x-genkit-stream-id": "C" * 22, "x-genkit-stream-offset": "-1"}},
            400,
            "INVALID_ARGUMENT",
        ),
    ]
    for kwargs, status, code in cases:
        response = await live.http.post(url, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == status, (kwargs, response.text)
        assert response.json()["error"]["status"] == code
        assert "Traceback" not in response.text
    missing = await live.http.post(live.flow("nope"), json={})
    assert missing.status_code == 404
    assert missing.json()["error"]["status"] == "NOT_FOUND"


async def test_streamed_body_over_limit_without_content_length(live: Live) -> None:
    async def body() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b"x" * 1000

    response = await live.http.post(live.flow("echo"), content=body(), headers=JSON)
    assert response.status_code == 413


async def test_describe_and_list(live: Live) -> None:
    listed = (await live.http.get(live.url + "/flows/")).json()
    assert [f["name"] for f in listed["flows"]] == [
        "echo",
        "count",
        "text",
        "fail",
        "crash",
        "typed",
        "big",
        "words",
        "gate",
    ]
    typed = (await live.http.get(live.flow("typed"))).json()
    assert typed["schemas"]["input"]["required"] == ["name", "age"]
    assert typed["schemas"]["output"] == {"type": "string"}


async def test_result_frame_only_after_terminal_is_persisted(live: Live) -> None:
    response = await post_stream(live, "count", {"n": 3})
    assert live.manager is not None
    info = await live.manager.info(response.headers["x-genkit-stream-id"])
    assert (info.status, info.length) == ("done", 3)
    assert response.content.endswith(b'data: {"result":{"total":3}}\n\n')
