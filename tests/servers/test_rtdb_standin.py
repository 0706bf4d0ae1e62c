"""Tests of the RTDB stand-in server itself.

REST behaviour is tested in-process (httpx + ASGITransport); streaming, the command line and
restarts with ``--data-file`` against a real uvicorn subprocess on a free loopback port.
"""

from __future__ import annotations

import functools
import json
import select
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path as FilePath
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.servers.rtdb_standin import create_app
from tests.servers.rtdb_standin.query import Query, parse_query, run_query
from tests.servers.rtdb_standin.tree import (
    PUSH_CHARS,
    Node,
    PushIdGenerator,
    etag_of,
    get_at,
    prepare_value,
    set_at,
    to_output,
)

REPO_ROOT = FilePath(__file__).resolve().parents[2]
KEEPALIVE = 0.3

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://standin") as http:
        yield http


def q(**params: object) -> dict[str, str]:
    """Query parameters with JSON-encoded values, as the REST API expects them."""
    return {name: json.dumps(value) for name, value in params.items()}


# ------------------------------------------------------------------------------------------
# Reading and writing


async def test_put_then_get_roundtrip(client: httpx.AsyncClient) -> None:
    value = {"first": "Jack", "last": "Sparrow", "age": 30, "ok": True, "score": 1.5}
    response = await client.put("/users/jack.json", json=value)
    assert response.status_code == 200
    assert response.json() == value
    assert response.headers["content-type"].startswith("application/json")
    assert (await client.get("/users/jack.json")).json() == value
    assert (await client.get("/users/jack/first.json")).json() == "Jack"
    assert (await client.get("/users/.json")).json() == {"jack": value}
    assert (await client.get("/.json")).json() == {"users": {"jack": value}}


async def test_missing_location_is_null(client: httpx.AsyncClient) -> None:
    response = await client.get("/nothing/here.json")
    assert response.status_code == 200
    assert response.json() is None


async def test_trailing_slash_before_json_and_empty_segments(client: httpx.AsyncClient) -> None:
    await client.put("/a/b.json", json=1)
    assert (await client.get("/a/b/.json")).json() == 1
    assert (await client.get("http://standin//a//b.json")).json() == 1


async def test_put_overwrites_children(client: httpx.AsyncClient) -> None:
    await client.put("/u.json", json={"a": 1, "b": 2})
    await client.put("/u.json", json={"c": 3})
    assert (await client.get("/u.json")).json() == {"c": 3}


async def test_write_under_primitive_replaces_it(client: httpx.AsyncClient) -> None:
    await client.put("/p.json", json="text")
    await client.put("/p/child.json", json=1)
    assert (await client.get("/p.json")).json() == {"child": 1}


async def test_patch_updates_named_children_only(client: httpx.AsyncClient) -> None:
    await client.put("/users/alan.json", json={"name": "Alan", "birthday": "June 23, 1912"})
    response = await client.patch("/users/alan.json", json={"nickname": "Alan The Machine"})
    assert response.status_code == 200
    assert response.json() == {"nickname": "Alan The Machine"}
    assert (await client.get("/users/alan.json")).json() == {
        "name": "Alan",
        "birthday": "June 23, 1912",
        "nickname": "Alan The Machine",
    }


async def test_patch_multi_path(client: httpx.AsyncClient) -> None:
    await client.put("/users.json", json={"alan": {"name": "A"}, "grace": {"name": "G"}})
    body = {"alan/nickname": "Alan The Machine", "grace/nickname": "Amazing Grace"}
    response = await client.patch("/users.json", json=body)
    assert response.json() == body
    assert (await client.get("/users.json")).json() == {
        "alan": {"name": "A", "nickname": "Alan The Machine"},
        "grace": {"name": "G", "nickname": "Amazing Grace"},
    }


async def test_patch_with_objects_replaces_children(client: httpx.AsyncClient) -> None:
    await client.put("/users.json", json={"alan": {"name": "A"}, "grace": {"name": "G"}})
    await client.patch("/users.json", json={"alan": {"nickname": "M"}})
    assert (await client.get("/users.json")).json() == {
        "alan": {"nickname": "M"},
        "grace": {"name": "G"},
    }


async def test_patch_null_deletes_and_prunes(client: httpx.AsyncClient) -> None:
    await client.put("/x.json", json={"a": {"b": 1}, "c": 2})
    await client.patch("/x.json", json={"a/b": None})
    assert (await client.get("/x.json")).json() == {"c": 2}


@pytest.mark.parametrize(
    "body",
    [
        "[1, 2]",
        '"text"',
        "5",
        '{"a": 1, "a/b": 2}',
        '{"a/b": 1, "a/b/": 2}',
        '{"": 1}',
        '{"/": 1}',
        '{"a.b/c": 1}',
    ],
)
async def test_patch_bad_bodies(client: httpx.AsyncClient, body: str) -> None:
    response = await client.patch("/x.json", content=body)
    assert response.status_code == 400
    assert "error" in response.json()


async def test_post_generates_chronological_push_ids(client: httpx.AsyncClient) -> None:
    names = []
    for index in range(30):
        response = await client.post("/messages.json", json={"n": index})
        assert response.status_code == 200
        name = response.json()["name"]
        assert len(name) == 20
        assert set(name) <= set(PUSH_CHARS)
        names.append(name)
    assert names == sorted(names)
    assert len(set(names)) == len(names)
    stored = (await client.get("/messages.json")).json()
    assert [stored[name]["n"] for name in sorted(stored)] == list(range(30))


async def test_delete_returns_null_and_prunes_parents(client: httpx.AsyncClient) -> None:
    await client.put("/a/b/c.json", json=1)
    await client.put("/keep.json", json=True)
    response = await client.delete("/a/b/c.json")
    assert response.status_code == 200
    assert response.json() is None
    assert (await client.get("/a.json")).json() is None
    assert (await client.get("/.json")).json() == {"keep": True}


async def test_writing_null_or_empty_object_deletes(client: httpx.AsyncClient) -> None:
    await client.put("/a.json", json={"b": 1, "c": 2})
    await client.put("/a/b.json", content="null")
    assert (await client.get("/a.json")).json() == {"c": 2}
    await client.put("/a/c.json", json={})
    assert (await client.get("/a.json")).json() is None
    await client.put("/z.json", json={"n": None, "e": {}, "v": 1})
    assert (await client.get("/z.json")).json() == {"v": 1}


async def test_delete_root(client: httpx.AsyncClient) -> None:
    await client.put("/a.json", json=1)
    await client.delete("/.json")
    assert (await client.get("/.json")).json() is None


async def test_arrays_are_stored_as_objects_and_read_back(client: httpx.AsyncClient) -> None:
    await client.put("/arr.json", json=[1, "two", {"three": 3}])
    assert (await client.get("/arr.json")).json() == [1, "two", {"three": 3}]
    assert (await client.get("/arr/1.json")).json() == "two"
    await client.delete("/arr/1.json")
    assert (await client.get("/arr.json")).json() == [1, None, {"three": 3}]
    await client.put("/sparse.json", json={"0": "a", "7": "b"})
    assert (await client.get("/sparse.json")).json() == {"0": "a", "7": "b"}


async def test_numbers_normalised(client: httpx.AsyncClient) -> None:
    await client.put("/n.json", json={"f": 2.0, "g": 2.5, "big": 2**70})
    assert (await client.get("/n.json")).json() == {"f": 2, "g": 2.5, "big": float(2**70)}
    assert (await client.get("/n/f.json")).text == "2"


async def test_print_pretty_and_silent(client: httpx.AsyncClient) -> None:
    response = await client.put("/a.json", params={"print": "pretty"}, json={"b": 1})
    assert response.text == '{\n  "b": 1\n}'
    for method in ("PUT", "PATCH", "POST"):
        response = await client.request(
            method, "/a.json", params={"print": "silent"}, json={"c": 2}
        )
        assert response.status_code == 204, method
        assert response.content == b""
    response = await client.get("/a.json", params={"print": "silent"})
    assert response.status_code == 204
    assert response.content == b""
    response = await client.delete("/a.json", params={"print": "silent"})
    assert response.status_code == 204
    assert (await client.get("/a.json")).json() is None


async def test_shallow(client: httpx.AsyncClient) -> None:
    await client.put("/message.json", json={"user": {"name": "Chris"}, "body": "Hello!", "n": 1})
    shallow = {"shallow": "true"}
    assert (await client.get("/message.json", params=shallow)).json() == {
        "user": True,
        "body": True,
        "n": True,
    }
    assert (await client.get("/message/body.json", params=shallow)).json() == "Hello!"
    assert (await client.get("/nothing.json", params=shallow)).json() is None


async def test_method_override(client: httpx.AsyncClient) -> None:
    await client.put("/a.json", json={"b": 1, "c": 2})
    response = await client.post(
        "/a/b.json", headers={"X-HTTP-Method-Override": "DELETE"}, content=b""
    )
    assert response.status_code == 200
    assert (await client.get("/a.json")).json() == {"c": 2}
    await client.post("/a.json", params={"x-http-method-override": "PATCH"}, json={"d": 4})
    assert (await client.get("/a.json")).json() == {"c": 2, "d": 4}
    response = await client.post("/a.json", headers={"X-HTTP-Method-Override": "TRACE"})
    assert response.status_code == 400


async def test_callback_and_download(client: httpx.AsyncClient) -> None:
    await client.put("/a.json", json={"b": 1})
    response = await client.get("/a.json", params={"callback": "gotData"})
    assert response.text == 'gotData({"b":1});'
    assert response.headers["content-type"].startswith("application/javascript")
    response = await client.get("/a.json", params={"download": "backup.json"})
    assert response.headers["content-disposition"] == 'attachment; filename="backup.json"'
    assert (await client.get("/a.json", params={"callback": "1bad"})).status_code == 400


async def test_cors_preflight(client: httpx.AsyncClient) -> None:
    response = await client.options("/a.json")
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"


async def test_path_without_json_suffix_is_404(client: httpx.AsyncClient) -> None:
    assert (await client.get("/users")).status_code == 404
    assert (await client.get("/")).status_code == 404


# ------------------------------------------------------------------------------------------
# Validation errors


@pytest.mark.parametrize("bad", ["a.b", "a$b", "a#b", "a[b", "a]b", "a\x01b", "a\x7fb", ""])
async def test_invalid_keys_in_body_are_400(client: httpx.AsyncClient, bad: str) -> None:
    response = await client.put("/x.json", json={"ok": {bad: 1}})
    assert response.status_code == 400
    assert "error" in response.json()
    assert (await client.get("/x.json")).json() is None


@pytest.mark.parametrize(
    "path",
    ["/a.b/c.json", "/a$/c.json", "/a%23b.json", "/a%5Bb.json", "/a%2Fb/c.json", "/%01.json"],
)
async def test_invalid_path_segments_are_400(client: httpx.AsyncClient, path: str) -> None:
    for method in ("GET", "PUT"):
        response = await client.request(method, path, content=b"1")
        assert response.status_code == 400, (method, path)
        assert response.json() == {"error": "Invalid path: Invalid token in path"}


async def test_key_length_and_depth_limits(client: httpx.AsyncClient) -> None:
    assert (await client.put("/x.json", json={"k" * 768: 1})).status_code == 200
    assert (await client.put("/x.json", json={"k" * 769: 1})).status_code == 400
    deep_path = "/" + "/".join(["d"] * 32) + ".json"
    assert (await client.put(deep_path, json=1)).status_code == 200
    too_deep = "/" + "/".join(["d"] * 33) + ".json"
    assert (await client.put(too_deep, json=1)).status_code == 400
    nested: Any = 1
    for _ in range(33):
        nested = {"n": nested}
    assert (await client.put("/y.json", json=nested)).status_code == 400


@pytest.mark.parametrize("body", [b"{not json", b"", b"   ", b"NaN", b'{"a": Infinity}', b"\xff"])
async def test_bad_json_bodies_are_400(client: httpx.AsyncClient, body: bytes) -> None:
    for method in ("PUT", "POST", "PATCH"):
        response = await client.request(method, "/x.json", content=body)
        assert response.status_code == 400, (method, body)
        assert "error" in response.json()


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("GET", {"cachebust": "1"}),
        ("GET", {"print": "ugly"}),
        ("GET", {"shallow": "yes"}),
        ("GET", {"shallow": "true", "orderBy": '"$key"'}),
        ("GET", {"format": "xml"}),
        ("GET", {"timeout": "10"}),
        ("GET", {"timeout": "0s"}),
        ("GET", {"timeout": "16min"}),
        ("GET", {"writeSizeLimit": "tiny"}),
        ("PUT", {"writeSizeLimit": "huge"}),
        ("PUT", {"orderBy": '"$key"'}),
        ("PUT", {"shallow": "true"}),
        ("DELETE", {"limitToFirst": "1"}),
    ],
)
async def test_unsupported_query_parameters_are_400(
    client: httpx.AsyncClient, method: str, params: dict[str, str]
) -> None:
    response = await client.request(method, "/x.json", params=params, content=b"1")
    assert response.status_code == 400, (method, params)
    assert "error" in response.json()


async def test_supported_parameters_are_accepted(client: httpx.AsyncClient) -> None:
    params = {"timeout": "10s", "format": "export", "auth": "t", "access_token": "t2"}
    assert (await client.get("/x.json", params=params)).status_code == 200
    params = {"writeSizeLimit": "medium"}
    assert (await client.put("/x.json", params=params, json=1)).status_code == 200
    assert (await client.get("/x.json", params={"timeout": "3ms"})).status_code == 200


async def test_duplicate_query_parameter_is_400(client: httpx.AsyncClient) -> None:
    response = await client.get("/x.json?orderBy=%22a%22&orderBy=%22b%22")
    assert response.status_code == 400


# ------------------------------------------------------------------------------------------
# Server values


async def test_server_timestamp_anywhere(client: httpx.AsyncClient) -> None:
    before = int(time.time() * 1000)
    body = {"createdAt": {".sv": "timestamp"}, "deep": {"list": [{".sv": "timestamp"}]}}
    response = await client.put("/t.json", json=body)
    after = int(time.time() * 1000)
    written = response.json()
    stamp = written["createdAt"]
    assert isinstance(stamp, int)
    assert before <= stamp <= after
    assert written["deep"]["list"] == [stamp]
    assert (await client.get("/t.json")).json() == written
    response = await client.put("/t/createdAt.json", json={".sv": "timestamp"})
    assert isinstance(response.json(), int)


async def test_server_increment(client: httpx.AsyncClient) -> None:
    inc = {".sv": {"increment": 2}}
    assert (await client.put("/c.json", json=inc)).json() == 2
    assert (await client.put("/c.json", json=inc)).json() == 4
    await client.patch("/.json", json={"c": {".sv": {"increment": 0.5}}})
    assert (await client.get("/c.json")).json() == 4.5
    await client.put("/s.json", json="text")
    assert (await client.put("/s.json", json=inc)).json() == 2


@pytest.mark.parametrize(
    "value",
    [
        {".sv": "now"},
        {".sv": {"increment": "1"}},
        {".sv": {"increment": True}},
        {".sv": {"decrement": 1}},
        {".sv": "timestamp", "extra": 1},
        {".priority": 1, "a": 1},
        {".value": 1},
    ],
)
async def test_unrecognized_server_values_are_400(
    client: httpx.AsyncClient, value: dict[str, object]
) -> None:
    response = await client.put("/x.json", json={"v": value})
    assert response.status_code == 400
    assert "error" in response.json()


# ------------------------------------------------------------------------------------------
# ETags and conditional requests


async def test_etag_on_get(client: httpx.AsyncClient) -> None:
    etag_header = {"X-Firebase-ETag": "true"}
    response = await client.get("/counter.json", headers=etag_header)
    assert response.headers["etag"] == "null_etag"
    assert "etag" not in (await client.get("/counter.json")).headers
    await client.put("/counter.json", json=10)
    first = (await client.get("/counter.json", headers=etag_header)).headers["etag"]
    assert first != "null_etag"
    assert first == (await client.get("/counter.json", headers=etag_header)).headers["etag"]
    await client.put("/counter.json", json=11)
    assert (await client.get("/counter.json", headers=etag_header)).headers["etag"] != first
    await client.put("/counter.json", json=10)
    assert (await client.get("/counter.json", headers=etag_header)).headers["etag"] == first


async def test_etag_is_independent_of_key_order(client: httpx.AsyncClient) -> None:
    etag_header = {"X-Firebase-ETag": "true"}
    await client.put("/a.json", json={"x": 1, "y": 2})
    await client.put("/b.json", content='{"y": 2, "x": 1}')
    etag_a = (await client.get("/a.json", headers=etag_header)).headers["etag"]
    etag_b = (await client.get("/b.json", headers=etag_header)).headers["etag"]
    assert etag_a == etag_b


async def test_conditional_put(client: httpx.AsyncClient) -> None:
    await client.put("/upvotes.json", json=10)
    etag = (await client.get("/upvotes.json", headers={"X-Firebase-ETag": "true"})).headers["etag"]
    response = await client.put("/upvotes.json", json=11, headers={"if-match": etag})
    assert response.status_code == 200
    assert response.json() == 11
    # The ETag is now stale: the write is refused with the current value and ETag.
    response = await client.put("/upvotes.json", json=12, headers={"if-match": etag})
    assert response.status_code == 412
    assert response.json() == 11
    current = response.headers["etag"]
    assert current == etag_of(11)
    assert (await client.get("/upvotes.json")).json() == 11
    response = await client.put("/upvotes.json", json=12, headers={"if-match": current})
    assert response.status_code == 200
    assert (await client.get("/upvotes.json")).json() == 12


async def test_conditional_put_on_missing_data_uses_null_etag(client: httpx.AsyncClient) -> None:
    response = await client.put("/new.json", json={"a": 1}, headers={"if-match": "null_etag"})
    assert response.status_code == 200
    response = await client.put("/new.json", json={"a": 2}, headers={"if-match": "null_etag"})
    assert response.status_code == 412
    assert response.json() == {"a": 1}


async def test_conditional_delete(client: httpx.AsyncClient) -> None:
    await client.put("/d.json", json="v")
    response = await client.delete("/d.json", headers={"if-match": "wrong"})
    assert response.status_code == 412
    assert response.json() == "v"
    assert response.headers["etag"] == etag_of("v")
    response = await client.delete(
        "/d.json", headers={"if-match": etag_of("v"), "X-Firebase-ETag": "true"}
    )
    assert response.status_code == 200
    assert response.json() is None
    assert response.headers["etag"] == "null_etag"
    assert (await client.get("/d.json")).json() is None


async def test_quoted_etag_is_accepted(client: httpx.AsyncClient) -> None:
    await client.put("/q.json", json=1)
    response = await client.put("/q.json", json=2, headers={"if-match": f'"{etag_of(1)}"'})
    assert response.status_code == 200


async def test_etag_returned_by_writes(client: httpx.AsyncClient) -> None:
    headers = {"X-Firebase-ETag": "true"}
    response = await client.put("/w.json", json={"a": 1}, headers=headers)
    assert response.headers["etag"] == etag_of({"a": 1})
    response = await client.post("/list.json", json="item", headers=headers)
    assert response.headers["etag"] == etag_of("item")


@pytest.mark.parametrize(
    ("method", "headers"),
    [
        ("GET", {"if-match": "null_etag"}),
        ("POST", {"if-match": "null_etag"}),
        ("PATCH", {"if-match": "null_etag"}),
        ("PATCH", {"X-Firebase-ETag": "true"}),
    ],
)
async def test_etag_unsupported_combinations_are_400(
    client: httpx.AsyncClient, method: str, headers: dict[str, str]
) -> None:
    response = await client.request(method, "/x.json", headers=headers, json={"a": 1})
    assert response.status_code == 400
    assert (await client.get("/x.json")).json() is None


async def test_if_none_match(client: httpx.AsyncClient) -> None:
    await client.put("/v.json", json="one")
    response = await client.get("/v.json", headers={"if-none-match": etag_of("one")})
    assert response.status_code == 304
    assert response.headers["etag"] == etag_of("one")
    response = await client.get("/v.json", headers={"if-none-match": etag_of("two")})
    assert response.status_code == 200
    assert response.json() == "one"
    assert response.headers["etag"] == etag_of("one")


# ------------------------------------------------------------------------------------------
# Namespaces


async def test_namespaces_are_separate_trees(client: httpx.AsyncClient) -> None:
    await client.put("/a.json", params={"ns": "one"}, json=1)
    await client.put("/a.json", params={"ns": "two"}, json=2)
    await client.put("/a.json", json=0)
    assert (await client.get("/a.json", params={"ns": "one"})).json() == 1
    assert (await client.get("/a.json", params={"ns": "two"})).json() == 2
    assert (await client.get("/a.json")).json() == 0
    assert (await client.get("/a.json", params={"ns": "default"})).json() == 0
    assert (await client.get("/.json", params={"ns": "never-used"})).json() is None


async def test_namespace_from_firebaseio_host(client: httpx.AsyncClient) -> None:
    await client.put("/a.json", params={"ns": "myproj"}, json="hosted")
    response = await client.get("/a.json", headers={"Host": "myproj.firebaseio.com"})
    assert response.json() == "hosted"


async def test_invalid_namespace_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/a.json", params={"ns": "bad name!"})
    assert response.status_code == 404
    assert "error" in response.json()


# ------------------------------------------------------------------------------------------
# Queries

DINOSAURS = {
    "lambeosaurus": {"height": 2.1, "length": 12.5, "weight": 5000},
    "stegosaurus": {"height": 4, "length": 9, "weight": 2500},
    "triceratops": {"height": 3, "length": 8, "weight": 11000},
    "linhenykus": {"height": 0.6, "length": 1, "weight": 0.4},
    "nodims": {"name": "no height"},
}


async def test_order_by_child_with_ranges_and_limits(client: httpx.AsyncClient) -> None:
    await client.put("/dinosaurs.json", json=DINOSAURS)

    async def keys(**params: object) -> set[str]:
        response = await client.get("/dinosaurs.json", params=q(**params))
        assert response.status_code == 200, response.text
        return set(response.json() or {})

    assert await keys(orderBy="height", startAt=3) == {"stegosaurus", "triceratops"}
    assert await keys(orderBy="height", endAt=3) == {
        "lambeosaurus",
        "triceratops",
        "linhenykus",
        "nodims",
    }
    assert await keys(orderBy="height", equalTo=4) == {"stegosaurus"}
    assert await keys(orderBy="weight", limitToLast=2) == {"lambeosaurus", "triceratops"}
    # A missing child orders as null, so it comes first.
    assert await keys(orderBy="height", limitToFirst=2) == {"nodims", "linhenykus"}
    assert await keys(orderBy="height", startAt=1, limitToFirst=2) == {
        "lambeosaurus",
        "triceratops",
    }
    assert await keys(orderBy="height", startAt=100) == set()
    response = await client.get("/dinosaurs.json", params=q(orderBy="height", startAt=100))
    assert response.json() is None


async def test_order_by_nested_child_path(client: httpx.AsyncClient) -> None:
    data = {name: {"dimensions": dims} for name, dims in DINOSAURS.items()}
    await client.put("/dinosaurs.json", json=data)
    response = await client.get("/dinosaurs.json", params=q(orderBy="dimensions/height", startAt=3))
    assert set(response.json()) == {"stegosaurus", "triceratops"}
    assert response.json()["stegosaurus"] == data["stegosaurus"]


async def test_order_by_key(client: httpx.AsyncClient) -> None:
    await client.put("/dinosaurs.json", json=DINOSAURS)
    response = await client.get("/dinosaurs.json", params=q(orderBy="$key", startAt="a", endAt="m"))
    assert set(response.json()) == {"lambeosaurus", "linhenykus"}
    response = await client.get(
        "/dinosaurs.json", params=q(orderBy="$key", startAt="s", endAt="s\uf8ff")
    )
    assert set(response.json()) == {"stegosaurus"}
    response = await client.get("/dinosaurs.json", params=q(orderBy="$key", endAt="stegosaurus"))
    assert "stegosaurus" in response.json()


async def test_order_by_key_integer_keys_first(client: httpx.AsyncClient) -> None:
    keys = ["10", "9", "a", "-1", "007", "2147483648", "00000120", "b"]
    await client.put("/k.json", json={key: True for key in keys})

    async def first(count: int) -> set[str]:
        response = await client.get("/k.json", params=q(orderBy="$key", limitToFirst=count))
        return set(response.json())

    assert await first(3) == {"-1", "9", "10"}
    assert await first(4) == {"-1", "9", "10", "00000120"}
    assert await first(6) == {"-1", "9", "10", "00000120", "007", "2147483648"}
    response = await client.get("/k.json", params=q(orderBy="$key", startAt="00000120"))
    assert set(response.json()) == {"00000120", "007", "2147483648", "a", "b"}
    response = await client.get("/k.json", params=q(orderBy="$key", startAt="5", endAt="10"))
    assert set(response.json()) == {"9", "10"}


async def test_order_by_value_type_order(client: httpx.AsyncClient) -> None:
    scores = {
        "n": None,
        "t": True,
        "f": False,
        "one": 1,
        "half": 0.5,
        "s_b": "b",
        "s_a": "a",
        "obj": {"x": 1},
    }
    await client.put("/scores.json", json=scores)
    expected_order = ["f", "t", "half", "one", "s_a", "s_b", "obj"]  # null is not stored
    for count in range(1, len(expected_order) + 1):
        response = await client.get("/scores.json", params=q(orderBy="$value", limitToFirst=count))
        assert set(response.json()) == set(expected_order[:count]), count
        response = await client.get("/scores.json", params=q(orderBy="$value", limitToLast=count))
        assert set(response.json()) == set(expected_order[-count:]), count
    response = await client.get("/scores.json", params=q(orderBy="$value", startAt=True, endAt=1))
    assert set(response.json()) == {"t", "half", "one"}
    response = await client.get("/scores.json", params=q(orderBy="$value", equalTo="a"))
    assert response.json() == {"s_a": "a"}
    response = await client.get("/scores.json", params=q(orderBy="$value", startAt="a"))
    assert set(response.json()) == {"s_a", "s_b", "obj"}


async def test_ties_broken_by_key(client: httpx.AsyncClient) -> None:
    await client.put("/t.json", json={"b": 1, "a": 1, "c": 1, "2": 1, "10": 1})
    response = await client.get("/t.json", params=q(orderBy="$value", limitToFirst=3))
    assert set(response.json()) == {"2", "10", "a"}


async def test_query_on_primitive_and_missing(client: httpx.AsyncClient) -> None:
    await client.put("/p.json", json="leaf")
    params = q(orderBy="$key", limitToFirst=1)
    assert (await client.get("/p.json", params=params)).json() == "leaf"
    assert (await client.get("/none.json", params=params)).json() is None


@pytest.mark.parametrize(
    "params",
    [
        {"limitToFirst": "1"},
        {"startAt": "1"},
        {"equalTo": '"x"'},
        {"orderBy": "$key"},
        {"orderBy": "height"},
        {"orderBy": '""'},
        {"orderBy": "1"},
        {"orderBy": '"a.b"'},
        {"orderBy": '"$other"'},
        {"orderBy": '"$priority"'},
        {"orderBy": '"$key"', "startAt": "1"},
        {"orderBy": '"$value"', "startAt": '{"a": 1}'},
        {"orderBy": '"$value"', "equalTo": "[1]"},
        {"orderBy": '"$value"', "startAt": "unquoted"},
        {"orderBy": '"$value"', "limitToFirst": "0"},
        {"orderBy": '"$value"', "limitToFirst": "-2"},
        {"orderBy": '"$value"', "limitToFirst": "1.5"},
        {"orderBy": '"$value"', "limitToLast": "true"},
        {"orderBy": '"$value"', "limitToFirst": "1", "limitToLast": "1"},
        {"orderBy": '"$value"', "equalTo": "1", "startAt": "0"},
    ],
)
async def test_query_parameter_errors_are_400(
    client: httpx.AsyncClient, params: dict[str, str]
) -> None:
    response = await client.get("/x.json", params=params)
    assert response.status_code == 400, params
    assert "error" in response.json()


async def test_filter_without_order_by_message(client: httpx.AsyncClient) -> None:
    response = await client.get("/x.json", params={"limitToFirst": "1"})
    assert response.json() == {
        "error": "orderBy must be defined when other query parameters are defined"
    }


# ------------------------------------------------------------------------------------------
# Auth, rules, control endpoints


async def test_deny_rules_on_rest(client: httpx.AsyncClient) -> None:
    await client.put("/private/secret.json", json="s")
    await client.put("/public/info.json", json="i")
    response = await client.post("/.standin/rules", json={"deny": ["private"]})
    assert response.json()["deny"] == ["/private"]
    denied = {"error": "Permission denied"}
    for method, path in [
        ("GET", "/private.json"),
        ("GET", "/private/secret.json"),
        ("PUT", "/private/secret.json"),
        ("DELETE", "/private.json"),
        ("POST", "/private.json"),
        ("GET", "/.json"),  # reading the root would reveal the denied data
    ]:
        response = await client.request(method, path, content=b"1", params={"auth": "user"})
        assert response.status_code == 401, (method, path)
        assert response.json() == denied
    response = await client.patch("/.json", json={"private/x": 1})
    assert response.status_code == 401
    assert (await client.patch("/.json", json={"public/x": 1})).status_code == 200
    assert (await client.get("/public.json")).json() == {"info": "i", "x": 1}
    # The admin token ("owner", as firebase-admin sends to an emulator) bypasses rules.
    owner = {"Authorization": "Bearer owner"}
    assert (await client.get("/private/secret.json", headers=owner)).json() == "s"
    assert (await client.get("/private.json", params={"access_token": "owner"})).json() == {
        "secret": "s"
    }
    rules = (await client.get("/.standin/rules")).json()
    assert rules == {"deny": ["/private"], "revoked": []}
    await client.post("/.standin/rules", json={"deny": []})
    assert (await client.get("/private/secret.json")).json() == "s"


@pytest.mark.parametrize(
    "how",
    [
        {"params": {"auth": "tok"}},
        {"params": {"access_token": "tok"}},
        {"headers": {"Authorization": "Bearer tok"}},
    ],
)
async def test_revoked_token_is_401(client: httpx.AsyncClient, how: dict[str, Any]) -> None:
    assert (await client.get("/a.json", **how)).status_code == 200
    await client.post("/.standin/revoke", json={"token": "tok"})
    response = await client.get("/a.json", **how)
    assert response.status_code == 401
    assert "error" in response.json()
    assert (await client.put("/a.json", json=1, **how)).status_code == 401
    assert (await client.get("/a.json", params={"auth": "other"})).status_code == 200


async def test_stats_count_requests(client: httpx.AsyncClient) -> None:
    await client.post("/.standin/reset")
    await client.put("/a.json", json=1)
    await client.put("/b.json", json=1)
    await client.patch("/.json", json={"c": 1})
    await client.post("/l.json", json=1)
    await client.delete("/a.json")
    await client.get("/a.json")
    await client.put("/a.json", content=b"bad")
    stats = (await client.get("/.standin/stats")).json()
    assert stats["requests"] == {"GET": 1, "PUT": 3, "PATCH": 1, "POST": 1, "DELETE": 1}
    assert stats["writes"] == 6
    assert stats["writes_applied"] == 5
    assert stats["stream_opens"] == 0
    assert stats["open_streams"] == 0


async def test_reset_wipes_everything(client: httpx.AsyncClient) -> None:
    await client.put("/a.json", json=1)
    await client.put("/a.json", params={"ns": "other"}, json=1)
    await client.post("/.standin/rules", json={"deny": ["x"]})
    await client.post("/.standin/revoke", json={"token": "t"})
    assert (await client.post("/.standin/reset")).json() == {"ok": True}
    assert (await client.get("/.json")).json() is None
    assert (await client.get("/.json", params={"ns": "other"})).json() is None
    assert (await client.get("/x.json", params={"auth": "t"})).status_code == 200
    assert (await client.get("/.standin/stats")).json()["requests"]["GET"] == 3


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/.standin/rules", b'{"deny": "x"}', 400),
        ("POST", "/.standin/rules", b"[]", 400),
        ("POST", "/.standin/rules", b"nope", 400),
        ("POST", "/.standin/revoke", b"{}", 400),
        ("GET", "/.standin/reset", b"", 405),
        ("GET", "/.standin/unknown", b"", 404),
    ],
)
async def test_control_endpoint_errors(
    client: httpx.AsyncClient, method: str, path: str, body: bytes, status: int
) -> None:
    response = await client.request(method, path, content=body)
    assert response.status_code == status
    assert "error" in response.json()


async def test_streams_are_not_served_in_process_without_listeners(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/.standin/drop-streams")
    assert response.json() == {"dropped": 0}


# ------------------------------------------------------------------------------------------
# --data-file (in-process)


def _file_names(directory: FilePath) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


async def test_data_file_survives_a_new_app(tmp_path: FilePath) -> None:
    data_file = tmp_path / "rtdb.json"
    transport = httpx.ASGITransport(app=create_app(data_file=data_file))
    async with httpx.AsyncClient(transport=transport, base_url="http://a") as first:
        await first.put("/a.json", json={"b": [1, 2]})
        await first.put("/a.json", params={"ns": "other"}, json="o")
        await first.post("/l.json", json={"t": {".sv": "timestamp"}})
        # The response is sent only after the data is saved.
        saved = json.loads(data_file.read_text())
        assert saved["namespaces"]["default"]["a"] == {"b": {"0": 1, "1": 2}}
    assert _file_names(tmp_path) == ["rtdb.json"]  # no temp files left
    transport = httpx.ASGITransport(app=create_app(data_file=data_file))
    async with httpx.AsyncClient(transport=transport, base_url="http://b") as second:
        assert (await second.get("/a.json")).json() == {"b": [1, 2]}
        assert (await second.get("/a.json", params={"ns": "other"})).json() == "o"
        await second.post("/.standin/reset")
    assert json.loads(data_file.read_text())["namespaces"] == {}


async def test_data_file_concurrent_writes_all_saved(tmp_path: FilePath) -> None:
    data_file = tmp_path / "rtdb.json"
    transport = httpx.ASGITransport(app=create_app(data_file=data_file))
    async with httpx.AsyncClient(transport=transport, base_url="http://a") as http:

        async def write(index: int) -> None:
            response = await http.put(f"/items/{index}.json", json={"i": index})
            assert response.status_code == 200
            saved = json.loads(data_file.read_text())["namespaces"]["default"]["items"]
            assert saved[str(index)] == {"i": index}

        async with anyio.create_task_group() as group:
            for index in range(50):
                group.start_soon(write, index)
    assert len(json.loads(data_file.read_text())["namespaces"]["default"]["items"]) == 50


async def test_data_file_plain_json_seeds_default_namespace(tmp_path: FilePath) -> None:
    data_file = tmp_path / "seed.json"
    data_file.write_text(json.dumps({"users": {"u1": {"name": "A"}}, "list": [1, 2]}))
    transport = httpx.ASGITransport(app=create_app(data_file=data_file))
    async with httpx.AsyncClient(transport=transport, base_url="http://a") as http:
        assert (await http.get("/users/u1/name.json")).json() == "A"
        assert (await http.get("/list.json")).json() == [1, 2]


# ------------------------------------------------------------------------------------------
# Pure functions (property tests)

_keys = st.sampled_from(["a", "b", "c", "0", "1", "x-y"])
_leaves = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.sampled_from(["s", "t"]))
_values = st.recursive(
    _leaves, lambda children: st.dictionaries(_keys, children, max_size=3), max_leaves=8
)
_paths = st.lists(_keys, max_size=3).map(tuple)


def _flatten(node: Node, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], object]:
    if isinstance(node, dict):
        leaves: dict[tuple[str, ...], object] = {}
        for key, child in node.items():
            leaves.update(_flatten(child, (*prefix, key)))
        return leaves
    return {} if node is None else {prefix: node}


def _no_empty_objects(node: Node) -> bool:
    if isinstance(node, dict):
        return bool(node) and all(_no_empty_objects(child) for child in node.values())
    return node is not None


@given(st.lists(st.tuples(_paths, _values), max_size=12))
@settings(max_examples=200, deadline=None)
def test_tree_writes_match_a_leaf_model(writes: list[tuple[tuple[str, ...], object]]) -> None:
    root: Node = None
    model: dict[tuple[str, ...], object] = {}
    for path, raw in writes:
        value = prepare_value(raw, get_at(root, path), len(path), 0)
        root = set_at(root, path, value)
        # The model: everything at/under the path is replaced, and so is a leaf above it
        # unless the write is a deletion (deleting under a leaf leaves the leaf alone).
        model = {
            leaf: val
            for leaf, val in model.items()
            if leaf[: len(path)] != path and (value is None or path[: len(leaf)] != leaf)
        }
        model.update({(*path, *sub): val for sub, val in _flatten(value).items()})
        assert _flatten(root) == model
        assert root is None or _no_empty_objects(root)
        assert get_at(root, path) == value or (value is None and get_at(root, path) is None)


@given(st.lists(st.integers(0, 3), min_size=1, max_size=300))
@settings(max_examples=50, deadline=None)
def test_push_ids_sort_in_creation_order(steps: list[int]) -> None:
    generator = PushIdGenerator()
    stamp = 1_700_000_000_000
    ids = []
    for step in steps:
        stamp += step  # 0 means "same millisecond"
        ids.append(generator.next_id(stamp))
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(len(push_id) == 20 for push_id in ids)


def test_push_id_time_prefix_orders_by_time() -> None:
    generator = PushIdGenerator()
    early, late = generator.next_id(1_000), generator.next_id(64**3)
    assert early[:8] == "------Ec"  # 1000 = 15 * 64 + 40, zeros are "-"
    assert late[:8] == "----0---"
    assert early < late
    assert generator.next_id(0)[:8] == late[:8]  # the clock going backwards never reorders


_ORDER_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.floats(-3, 3, allow_nan=False),
    st.sampled_from(["", "a", "b", "ab", "B"]),
    st.just({"o": 1}),
)


def _reference_rank(value: object) -> tuple[int, Any]:
    """An independent statement of the documented order of values."""
    if value is None:
        return (0, 0)
    if value is False:
        return (1, 0)
    if value is True:
        return (2, 0)
    if isinstance(value, int | float):
        return (3, value)
    if isinstance(value, str):
        return (4, value)
    return (5, 0)


def _reference_key_order(a: str, b: str) -> int:
    def as_int(key: str) -> int | None:
        try:
            number = int(key)
        except ValueError:
            return None
        return number if str(number) == key and -(2**31) <= number < 2**31 else None

    ia, ib = as_int(a), as_int(b)
    if ia is not None and ib is not None:
        return (ia > ib) - (ia < ib)
    if ia is not None:
        return -1
    if ib is not None:
        return 1
    return (a > b) - (a < b)


@given(
    st.dictionaries(st.sampled_from(["k1", "k2", "3", "10", "z", "a"]), _ORDER_VALUES),
    st.integers(1, 7),
    st.booleans(),
)
@settings(max_examples=300, deadline=None)
def test_order_by_value_limits_match_reference(
    children: dict[str, object], limit: int, from_end: bool
) -> None:
    stored = prepare_value(children, None, 1, 0)
    assert stored is None or isinstance(stored, dict)
    items = stored or {}

    def compare(a: str, b: str) -> int:
        ra, rb = _reference_rank(items[a]), _reference_rank(items[b])
        if ra != rb:
            return -1 if ra < rb else 1
        return _reference_key_order(a, b)

    ordered = sorted(items, key=functools.cmp_to_key(compare))
    expected = ordered[-limit:] if from_end else ordered[:limit]
    name = "limitToLast" if from_end else "limitToFirst"
    query = parse_query({"orderBy": '"$value"', name: str(limit)})
    assert isinstance(query, Query)
    result = run_query(stored, query)
    assert result is None or isinstance(result, dict)
    assert set(result or {}) == set(expected)


def test_to_output_array_rule() -> None:
    assert to_output({"0": "a", "1": "b"}) == ["a", "b"]
    assert to_output({"1": "b"}) == [None, "b"]
    assert to_output({"0": "a", "3": "b"}) == ["a", None, None, "b"]
    assert to_output({"0": "a", "4": "b"}) == {"0": "a", "4": "b"}
    assert to_output({"0": "a", "01": "b"}) == {"0": "a", "01": "b"}
    assert to_output({"a": {"0": 1}}) == {"a": [1]}


# ------------------------------------------------------------------------------------------
# Real server (subprocess): command line, streaming, restarts


@dataclass
class ServerProcess:
    process: subprocess.Popen[str]
    url: str
    log: FilePath

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()


def start_server(log: FilePath, *extra: str) -> ServerProcess:
    command = [sys.executable, "-m", "tests.servers.rtdb_standin", "--host", "127.0.0.1"]
    command += ["--port", "0", *extra]
    with log.open("a") as log_handle:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=log_handle, text=True
        )
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], 20)
    line = process.stdout.readline() if ready else ""
    server = ServerProcess(process, "", log)
    prefix = "rtdb-standin listening on "
    if not line.startswith(prefix):
        server.kill()
        raise AssertionError(f"server did not start: {line!r}\n{log.read_text()}")
    server.url = line[len(prefix) :].strip()
    return server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("standin") / "server.log"
    process = start_server(log, "--keepalive", str(KEEPALIVE))
    yield process
    process.stop()
    assert "Traceback" not in log.read_text()


@pytest.fixture
async def http(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=50)
    timeout = httpx.Timeout(10.0)
    async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=timeout) as client:
        await client.post("/.standin/reset")
        yield client
        await client.post("/.standin/reset")


class StreamEnded(Exception):
    pass


Event = tuple[str, Any]


class EventStream:
    """``(event, data)`` pairs of a ``text/event-stream`` response.

    A background task parses the response into a queue, so a timed-out wait never disturbs
    the connection. The queue ends with ``None`` when the response ends, or with the error
    that broke the connection.
    """

    def __init__(self) -> None:
        self._send, self._receive = anyio.create_memory_object_stream[Event | Exception | None](
            1000
        )

    async def pump(self, response: httpx.Response) -> None:
        name, data = "", []
        try:
            async for line in response.aiter_lines():
                if line.startswith("event:"):
                    name = line[len("event:") :].strip()
                elif line.startswith("data:"):
                    data.append(line[len("data:") :].strip())
                elif line == "" and (name or data):
                    await self._send.send((name, json.loads("\n".join(data))))
                    name, data = "", []
            await self._send.send(None)
        except httpx.HTTPError as error:
            await self._send.send(error)

    async def next(self, within: float = 5.0, keepalive: bool = False) -> Event:
        with anyio.fail_after(within):
            while True:
                item = await self._receive.receive()
                if item is None:
                    raise StreamEnded
                if isinstance(item, Exception):
                    raise item
                if keepalive or item[0] != "keep-alive":
                    return item

    def close(self) -> None:
        self._send.close()
        self._receive.close()

    async def expect_nothing(self, wait: float = 0.4) -> None:
        with anyio.move_on_after(wait):
            event = await self.next(within=wait + 1)
            raise AssertionError(f"unexpected event {event}")


@asynccontextmanager
async def open_stream(
    http: httpx.AsyncClient, path: str, **params: str
) -> AsyncIterator[EventStream]:
    headers = {"Accept": "text/event-stream"}
    async with http.stream("GET", path, params=params, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = EventStream()
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(stream.pump, response)
                yield stream
                group.cancel_scope.cancel()
        finally:
            stream.close()


async def test_stream_initial_put_then_changes(http: httpx.AsyncClient) -> None:
    await http.put("/room.json", json={"a": 1, "b": 2})
    async with open_stream(http, "/room.json") as stream:
        assert await stream.next() == ("put", {"path": "/", "data": {"a": 1, "b": 2}})
        await http.put("/room/c.json", json={"foo": True, "bar": False})
        assert await stream.next() == ("put", {"path": "/c", "data": {"foo": True, "bar": False}})
        await http.patch("/room/c.json", json={"foo": 3, "baz": 4})
        assert await stream.next() == ("patch", {"path": "/c", "data": {"foo": 3, "baz": 4}})
        await http.delete("/room/a.json")
        assert await stream.next() == ("put", {"path": "/a", "data": None})
        name = (await http.post("/room/list.json", json="x")).json()["name"]
        assert await stream.next() == ("put", {"path": f"/list/{name}", "data": "x"})
        await http.put("/room/t.json", json={".sv": "timestamp"})
        event, data = await stream.next()
        assert event == "put"
        assert data["path"] == "/t"
        assert isinstance(data["data"], int)
        # Writes elsewhere, and writes that change nothing, send nothing.
        await http.put("/elsewhere.json", json=1)
        await http.put("/room/b.json", json=2)
        await http.patch("/room.json", json={"b": 2})
        await stream.expect_nothing()
        # A write above the listened location that changes it: put at "/".
        await http.put("/.json", json={"room": {"z": 26}, "other": 1})
        assert await stream.next() == ("put", {"path": "/", "data": {"z": 26}})
        await http.patch("/.json", json={"room/y": 25, "other": 2})
        assert await stream.next() == ("patch", {"path": "/", "data": {"y": 25}})
        await http.put("/.json", json={"room": {"z": 26, "y": 25}, "other": 3})
        await stream.expect_nothing()
        await http.delete("/.json")
        assert await stream.next() == ("put", {"path": "/", "data": None})


async def test_stream_patch_shapes(http: httpx.AsyncClient) -> None:
    async with open_stream(http, "/s/inner.json") as inner, open_stream(http, "/.json") as root:
        assert (await inner.next())[1] == {"path": "/", "data": None}
        assert (await root.next())[1] == {"path": "/", "data": None}
        await http.patch("/s.json", json={"inner/a": 1, "inner/b/c": 2, "outer": 3})
        assert await inner.next() == ("patch", {"path": "/", "data": {"a": 1, "b/c": 2}})
        assert await root.next() == (
            "patch",
            {"path": "/s", "data": {"inner/a": 1, "inner/b/c": 2, "outer": 3}},
        )
        await http.patch("/s.json", json={"inner": {"only": True}})
        assert await inner.next() == ("put", {"path": "/", "data": {"only": True}})
        assert await root.next() == ("patch", {"path": "/s", "data": {"inner": {"only": True}}})


async def test_stream_arrays_render_as_lists(http: httpx.AsyncClient) -> None:
    async with open_stream(http, "/arr.json") as stream:
        await stream.next()
        await http.put("/arr.json", json=[1, 2, 3])
        assert await stream.next() == ("put", {"path": "/", "data": [1, 2, 3]})


async def test_stream_keep_alive(http: httpx.AsyncClient) -> None:
    async with open_stream(http, "/ka.json") as stream:
        await stream.next()
        assert await stream.next(within=KEEPALIVE * 5, keepalive=True) == ("keep-alive", None)
        assert await stream.next(within=KEEPALIVE * 5, keepalive=True) == ("keep-alive", None)


async def test_keep_alive_cadence_while_events_flow(http: httpx.AsyncClient) -> None:
    async with open_stream(http, "/busy.json") as stream:
        await stream.next()
        for index in range(12):  # an event every KEEPALIVE / 3 seconds
            await http.put("/busy.json", json=index)
            await anyio.sleep(KEEPALIVE / 3)
        puts = keepalives = 0
        while puts < 12:
            event, _ = await stream.next(keepalive=True)
            puts += event == "put"
            keepalives += event == "keep-alive"
        assert keepalives >= 2  # keep-alives keep their cadence between events


async def test_stream_namespaces_and_auth_forms(http: httpx.AsyncClient) -> None:
    await http.put("/a.json", params={"ns": "one"}, json=1)
    async with open_stream(http, "/a.json", ns="one", auth="tok") as stream:
        assert (await stream.next())[1] == {"path": "/", "data": 1}
        await http.put("/a.json", json=99)  # default namespace: not this stream
        await http.put("/a.json", params={"ns": "one"}, json=2)
        assert await stream.next() == ("put", {"path": "/", "data": 2})


async def test_stream_cancel_when_rules_deny(http: httpx.AsyncClient) -> None:
    await http.put("/secret/x.json", json=1)
    async with (
        open_stream(http, "/secret/x.json", auth="user") as user,
        open_stream(http, "/secret.json", auth="owner") as admin,
        open_stream(http, "/public.json", auth="user") as public,
    ):
        for stream in (user, admin, public):
            await stream.next()
        response = await http.post("/.standin/rules", json={"deny": ["secret"]})
        assert response.json()["cancelled"] == 1
        assert await user.next() == ("cancel", "Permission denied")
        with pytest.raises(StreamEnded):
            await user.next()
        await http.put("/secret/x.json", json=2, params={"auth": "owner"})
        assert await admin.next() == ("put", {"path": "/x", "data": 2})
        await http.put("/public.json", json="p")
        assert await public.next() == ("put", {"path": "/", "data": "p"})
    headers = {"Accept": "text/event-stream"}
    response = await http.get("/secret.json", params={"auth": "user"}, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"error": "Permission denied"}


async def test_stream_auth_revoked(http: httpx.AsyncClient) -> None:
    async with (
        open_stream(http, "/r.json", auth="doomed") as doomed,
        open_stream(http, "/r.json", access_token="fine") as fine,
    ):
        await doomed.next()
        await fine.next()
        response = await http.post("/.standin/revoke", json={"token": "doomed"})
        assert response.json() == {"revoked_streams": 1}
        event, data = await doomed.next()
        assert event == "auth_revoked"
        assert isinstance(data, str)
        with pytest.raises(StreamEnded):
            await doomed.next()
        await http.put("/r.json", json=1)
        assert await fine.next() == ("put", {"path": "/", "data": 1})
    headers = {"Accept": "text/event-stream", "Authorization": "Bearer doomed"}
    assert (await http.get("/r.json", headers=headers)).status_code == 401


async def test_drop_streams_aborts_connections(
    http: httpx.AsyncClient, server: ServerProcess
) -> None:
    async with open_stream(http, "/d.json") as first, open_stream(http, "/d.json") as second:
        await first.next()
        await second.next()
        assert (await http.post("/.standin/drop-streams")).json() == {"dropped": 2}
        for stream in (first, second):
            with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                await stream.next()
    stats = (await http.get("/.standin/stats")).json()
    assert stats["open_streams"] == 0
    assert "Traceback" not in server.log.read_text()
    # The server is still fine, and new streams work.
    async with open_stream(http, "/d.json") as again:
        assert (await again.next())[0] == "put"


async def test_stream_query_window(http: httpx.AsyncClient) -> None:
    await http.put("/scores.json", json={"a": 10, "b": 20, "c": 30, "d": 40})
    params = q(orderBy="$value", limitToLast=2)
    async with open_stream(http, "/scores.json", **params) as stream:
        assert await stream.next() == ("put", {"path": "/", "data": {"c": 30, "d": 40}})
        await http.put("/scores/e.json", json=50)  # enters; "c" leaves
        assert await stream.next() == ("patch", {"path": "/", "data": {"c": None, "e": 50}})
        await http.put("/scores/a.json", json=11)  # outside the window: nothing
        await stream.expect_nothing()
        await http.put("/scores/d.json", json=45)  # changes inside the window
        assert await stream.next() == ("patch", {"path": "/", "data": {"d": 45}})
        await http.delete("/scores.json")
        assert await stream.next() == ("put", {"path": "/", "data": None})
        await http.put("/scores.json", json={"x": 1})
        assert await stream.next() == ("put", {"path": "/", "data": {"x": 1}})


async def test_stream_query_by_key_range(http: httpx.AsyncClient) -> None:
    await http.put("/msgs.json", json={"00000100": "a", "00000120": "b", "00000130": "c"})
    async with open_stream(http, "/msgs.json", **q(orderBy="$key", startAt="00000120")) as stream:
        expected = {"00000120": "b", "00000130": "c"}
        assert await stream.next() == ("put", {"path": "/", "data": expected})
        await http.put("/msgs/00000110.json", json="ignored")
        await http.put("/msgs/00000140.json", json="d")
        assert await stream.next() == ("patch", {"path": "/", "data": {"00000140": "d"}})


async def test_stream_parameter_errors(http: httpx.AsyncClient) -> None:
    headers = {"Accept": "text/event-stream"}
    for params in ({"shallow": "true"}, {"print": "silent"}, {"limitToFirst": "1"}):
        response = await http.get("/x.json", params=params, headers=headers)
        assert response.status_code == 400, params
        assert "error" in response.json()


async def test_stats_count_stream_opens(http: httpx.AsyncClient) -> None:
    async with open_stream(http, "/s.json") as stream:
        await stream.next()
        stats = (await http.get("/.standin/stats")).json()
        assert stats["stream_opens"] == 1
        assert stats["open_streams"] == 1
        assert stats["requests"]["GET"] == 0


async def test_many_concurrent_streams(http: httpx.AsyncClient) -> None:
    count = 200
    ready = 0
    all_ready = anyio.Event()
    received: list[tuple[str, Any]] = []

    async def listen(index: int) -> None:
        nonlocal ready
        async with open_stream(http, f"/fan/{index % 4}.json") as stream:
            await stream.next(within=30)
            ready += 1
            if ready == count:
                all_ready.set()
            received.append(await stream.next(within=30))

    with anyio.fail_after(60):
        async with anyio.create_task_group() as group:
            for index in range(count):
                group.start_soon(listen, index)
            await all_ready.wait()
            assert (await http.get("/.standin/stats")).json()["open_streams"] == count
            await http.patch("/fan.json", json={str(n): {"v": n} for n in range(4)})
    assert len(received) == count
    assert {event for event, _ in received} == {"put"}
    assert {data["path"] for _, data in received} == {"/"}


def test_data_file_survives_restart_and_kill(tmp_path: FilePath) -> None:
    data_file = tmp_path / "data.json"
    log = tmp_path / "server.log"
    first = start_server(log, "--data-file", str(data_file))
    try:
        with httpx.Client(base_url=first.url) as client:
            assert client.put("/a.json", json={"b": 1}).status_code == 200
            assert client.put("/a.json", params={"ns": "n2"}, json=2).status_code == 200
    finally:
        first.stop()
    second = start_server(log, "--data-file", str(data_file))
    try:
        with httpx.Client(base_url=second.url) as client:
            assert client.get("/a.json").json() == {"b": 1}
            assert client.get("/a.json", params={"ns": "n2"}).json() == 2
            # Killed right after a write's response: the write is on disk already.
            assert client.patch("/a.json", json={"c": 3}).status_code == 200
    finally:
        second.kill()
    third = start_server(log, "--data-file", str(data_file))
    try:
        with httpx.Client(base_url=third.url) as client:
            assert client.get("/a.json").json() == {"b": 1, "c": 3}
    finally:
        third.stop()
    assert "Traceback" not in log.read_text()


def test_stop_with_open_stream_is_quick(tmp_path: FilePath) -> None:
    server = start_server(tmp_path / "server.log")
    try:
        with (
            httpx.Client(base_url=server.url) as client,
            client.stream("GET", "/x.json", headers={"Accept": "text/event-stream"}) as response,
        ):
            lines = response.iter_lines()
            assert next(lines) == "event: put"
            started = time.monotonic()
            server.stop()
            assert time.monotonic() - started < 5
            assert list(lines) == ['data: {"path":"/","data":null}', ""]
    finally:
        server.stop()
