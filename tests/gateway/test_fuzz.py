"""Random bodies, headers and ids: always a clear answer, never a 500 or a traceback."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.gateway.conftest import Live

pytestmark = pytest.mark.anyio

# Header values a client can send: printable ASCII, no surrounding white space.
header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40
).map(str.strip)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps({"data": v}).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(["data", "init", "x"]), json_values, max_size=3).map(
        lambda v: json.dumps(v).encode()
    ),
)
ids = st.one_of(
    st.text(
        alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-", max_size=140
    ),
    header_text,
)
ALLOWED = {200, 204, 400, 401, 403, 404, 405, 413, 415}
FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def check(response_status: int, text: str) -> None:
    assert response_status in ALLOWED, (response_status, text[:300])
    assert "Traceback" not in text
    if response_status >= 400:
        error = json.loads(text)["error"]
        assert set(error) <= {"status", "message", "details"}
        assert isinstance(error["message"], str) and error["message"]


@FUZZ
@given(
    flow=st.sampled_from(["echo", "typed", "nope"]),
    body=bodies,
    content_type=st.one_of(st.sampled_from(["application/json", "text/plain", ""]), header_text),
    accept=st.sampled_from(["text/event-stream", "application/json", "*/*"]),
    stream_id=st.none() | ids,
    offset=st.none() | header_text,
    auth=st.none()
    | st.sampled_from(["Bearer alice", "Bearer invalid", "Bearer denied", "Basic x"]),
)
async def test_post_never_fails_badly(
    live: Live,
    flow: str,
    body: bytes,
    content_type: str,
    accept: str,
    stream_id: str | None,
    offset: str | None,
    auth: str | None,
) -> None:
    headers = {"content-type": content_type, "accept": accept}
    if stream_id is not None:
        headers["x-genkit-stream-id"] = stream_id
    if offset is not None:
        headers["x-genkit-stream-offset"] = offset
    if auth is not None:
        headers["authorization"] = auth
    response = await live.http.post(live.flow(flow), content=body, headers=headers)
    check(response.status_code, response.text)


@FUZZ
@given(
    method=st.sampled_from(["GET", "DELETE", "PUT"]),
    stream_id=ids,
    last_event_id=st.none() | header_text,
    query=st.none() | header_text,
)
async def test_stream_urls_never_fail_badly(
    live: Live, method: str, stream_id: str, last_event_id: str | None, query: str | None
) -> None:
    url = live.flow("echo") + "/streams/" + quote(stream_id, safe="")
    if query is not None:
        url += "?offset=" + quote(query, safe="")
    headers = {} if last_event_id is None else {"last-event-id": last_event_id}
    response = await live.http.request(method, url, headers=headers)
    check(response.status_code, response.text)
