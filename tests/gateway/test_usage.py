"""What users do by habit either works or fails with an error naming what to do."""

from __future__ import annotations

import pytest

from tests.gateway.conftest import Live

pytestmark = pytest.mark.anyio

JSON = {"content-type": "application/json"}


async def test_a_body_without_the_data_wrapper_says_so(live: Live) -> None:
    bare = await live.http.post(live.flow("typed"), json={"name": "Ada", "age": 36})
    assert bare.status_code == 400
    assert bare.json()["error"] == {
        "status": "INVALID_ARGUMENT",
        "message": 'request body must be {"data": <input>}: it has no "data" field',
    }
    for empty in [b"", b"{}"]:
        response = await live.http.post(live.flow("typed"), content=empty, headers=JSON)
        assert response.status_code == 400
        message = response.json()["error"]["message"]
        assert message.startswith("invalid input for flow 'typed'")
        assert message.endswith('the request carried no input; send {"data": <input>}')
    # The wrapper with a null input is the flow's own validation error, as before.
    null = await live.http.post(live.flow("typed"), json={"data": None})
    assert null.json()["error"]["message"] == "invalid input for flow 'typed'"
    fine = await live.http.post(live.flow("typed"), json={"data": {"name": "Ada", "age": 36}})
    assert fine.json() == {"result": "Hello Ada, 36"}


async def test_numbers_beyond_a_double_are_400(live: Live) -> None:
    response = await live.http.post(live.flow("echo"), content=b'{"data": 1e400}', headers=JSON)
    assert response.status_code == 400
    assert "out of range" in response.json()["error"]["message"]
