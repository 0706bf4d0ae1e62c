"""The ASGI application: REST requests, event streams and the ``/.standin/`` control endpoints."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path as FilePath
from typing import Any
from urllib.parse import parse_qsl, unquote

from .db import ADMIN_TOKEN, Database
from .hub import Listener, WriteOp
from .persist import Persister, dump_namespaces, load_namespaces
from .query import QUERY_PARAMS, parse_query, run_query
from .sse import AsgiMessage, Receive, Send, serve_stream
from .tree import (
    MAX_DEPTH,
    NULL_ETAG,
    Node,
    OutValue,
    Path,
    RtdbError,
    bad_request,
    clean_etag,
    etag_of,
    get_at,
    now_ms,
    overlapping,
    parse_path,
    path_from_segments,
    path_str,
    prepare_value,
    to_output,
)

DEFAULT_NAMESPACE = "default"
MAX_BODY_BYTES = 256 * 1024 * 1024

_NAMESPACE = re.compile(r"[A-Za-z0-9_-]{1,128}")
_HOSTED = re.compile(
    r"([A-Za-z0-9_-]+)\.(?:[a-z0-9-]+\.)?(?:firebaseio\.com|firebasedatabase\.app)"
)
_CALLBACK = re.compile(r"[A-Za-z_$][A-Za-z0-9_$.]*")
_TIMEOUT = re.compile(r"([0-9]+)(ms|s|min)")
_TIMEOUT_UNIT_MS = {"ms": 1, "s": 1000, "min": 60_000}
_WRITE_SIZE_LIMITS = frozenset({"tiny", "small", "medium", "large", "unlimited"})
_WRITE_METHODS = frozenset({"PUT", "POST", "PATCH", "DELETE"})

# Which query parameters each method accepts ("The request does not support one of the query
# parameters that is specified" is a 400).
_ANY_METHOD_PARAMS = frozenset({"auth", "access_token", "ns", "print"})
_GET_PARAMS = frozenset({"shallow", "callback", "format", "download", "timeout", *QUERY_PARAMS})
_STREAM_PARAMS = frozenset({"auth", "access_token", "ns", "print", *QUERY_PARAMS})
_METHOD_OVERRIDE = "x-http-method-override"

_JSON_HEADERS = [
    (b"content-type", b"application/json; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"access-control-allow-origin", b"*"),
]


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


def decode_json(body: bytes) -> object:
    """Parse a request body; 400 (as the real server) when it is missing or not JSON."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request("Invalid data; couldn't parse JSON object, array, or value.") from None
    if not text.strip():
        raise bad_request("No data supplied.")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        raise bad_request("Invalid data; couldn't parse JSON object, array, or value.") from None


def encode_json(value: object, pretty: bool = False) -> bytes:
    if pretty:
        return json.dumps(value, indent=2, ensure_ascii=False).encode()
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


async def send_response(
    send: Send,
    status: int,
    body: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    all_headers = list(headers if headers is not None else _JSON_HEADERS)
    all_headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise RtdbError(499, "Client closed the request")
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise bad_request("Data to write exceeds the maximum size of a single request.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


@dataclass
class Request:
    """A parsed RTDB REST request."""

    method: str
    path: Path
    params: dict[str, str]
    headers: dict[str, str]
    ns: str
    token: str | None

    @property
    def admin(self) -> bool:
        return self.token == ADMIN_TOKEN

    @property
    def pretty(self) -> bool:
        return self.params.get("print") == "pretty"

    @property
    def silent(self) -> bool:
        return self.params.get("print") == "silent"

    @property
    def wants_etag(self) -> bool:
        return self.headers.get("x-firebase-etag", "").strip().lower() == "true"

    @property
    def is_stream(self) -> bool:
        return self.method == "GET" and "text/event-stream" in self.headers.get("accept", "")


def _split_raw_path(scope: AsgiMessage) -> list[str]:
    raw: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
    raw = raw.split(b"?", 1)[0]
    try:
        return [unquote(seg.decode("utf-8"), errors="strict") for seg in raw.split(b"/")]
    except UnicodeError:
        raise bad_request("Invalid path: Invalid token in path") from None


def _parse_params(scope: AsgiMessage) -> dict[str, str]:
    query_string: bytes = scope.get("query_string", b"")
    params: dict[str, str] = {}
    try:
        pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True, errors="strict")
    except UnicodeError:
        raise bad_request("Invalid query string") from None
    for name, value in pairs:
        if name in params:
            raise bad_request(f"Query parameter {name} can only be given once")
        params[name] = value
    return params


def _namespace(params: dict[str, str], headers: dict[str, str]) -> str:
    ns = params.get("ns")
    if ns is None:
        hosted = _HOSTED.fullmatch(headers.get("host", "").split(":")[0])
        ns = hosted.group(1) if hosted else DEFAULT_NAMESPACE
    if not _NAMESPACE.fullmatch(ns):
        raise RtdbError(404, "The specified Firebase database was not found.")
    return ns


def _token(params: dict[str, str], headers: dict[str, str]) -> str | None:
    for name in ("auth", "access_token"):
        if name in params:
            return params[name]
    authorization = headers.get("authorization", "")
    scheme, _, credential = authorization.partition(" ")
    if scheme.lower() == "bearer" and credential.strip():
        return credential.strip()
    return None


def parse_request(scope: AsgiMessage, segments: list[str]) -> Request:
    headers = {
        name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]
    }
    params = _parse_params(scope)
    method: str = scope["method"].upper()
    override = headers.get(_METHOD_OVERRIDE) or params.pop(_METHOD_OVERRIDE, None)
    if override and method == "POST":
        method = override.strip().upper()
        if method not in {"GET", *_WRITE_METHODS}:
            raise bad_request(f"Unsupported method override: {override}")
    last = segments[-1]
    if not last.endswith(".json"):
        raise RtdbError(404, "Not found: append .json to the database path")
    path = path_from_segments([*segments[:-1], last[: -len(".json")]])
    return Request(
        method=method,
        path=path,
        params=params,
        headers=headers,
        ns=_namespace(params, headers),
        token=_token(params, headers),
    )


def check_params(request: Request) -> None:
    """400 for unknown or unsupported query parameters and invalid parameter values."""
    params = request.params
    if request.is_stream:
        allowed = _STREAM_PARAMS
    elif request.method == "GET":
        allowed = _ANY_METHOD_PARAMS | _GET_PARAMS
    else:
        allowed = _ANY_METHOD_PARAMS | {"writeSizeLimit"}
    for name in params:
        if name not in allowed:
            raise bad_request(f"The request does not support the query parameter {name!r}")
    printing = params.get("print")
    if printing is not None and printing not in ("pretty", "silent"):
        raise bad_request("print must be 'pretty' or 'silent'")
    if request.is_stream and printing == "silent":
        raise bad_request("print=silent is not supported when streaming")
    shallow = params.get("shallow")
    if shallow is not None:
        if shallow not in ("true", "false"):
            raise bad_request("shallow must be true or false")
        if shallow == "true" and any(name in params for name in QUERY_PARAMS):
            raise bad_request("Mixing shallow with query parameters is not supported")
    if params.get("format", "export") != "export":
        raise bad_request("format must be 'export'")
    if "callback" in params and not _CALLBACK.fullmatch(params["callback"]):
        raise bad_request("callback must be a JavaScript function name")
    if "timeout" in params:
        _check_timeout(params["timeout"])
    limit = params.get("writeSizeLimit")
    if limit is not None and limit not in _WRITE_SIZE_LIMITS:
        raise bad_request("writeSizeLimit must be tiny, small, medium, large or unlimited")


def _check_timeout(text: str) -> None:
    match = _TIMEOUT.fullmatch(text)
    if match is None:
        raise bad_request("timeout must be a number and a unit: 3ms, 3s or 3min")
    millis = int(match.group(1)) * _TIMEOUT_UNIT_MS[match.group(2)]
    if millis <= 0 or millis > 15 * 60_000:
        raise bad_request("timeout must be positive and at most 15min")


def _etag_header(etag: str) -> tuple[bytes, bytes]:
    return (b"etag", etag.encode("ascii"))


class StandinApp:
    """The stand-in server as an ASGI application (see the package docstring)."""

    def __init__(self, data_file: str | FilePath | None = None, keepalive: float = 30.0) -> None:
        self.data_file = FilePath(data_file) if data_file is not None else None
        namespaces = (
            {} if self.data_file is None else load_namespaces(self.data_file, DEFAULT_NAMESPACE)
        )
        self.db = Database(namespaces)
        self.keepalive = keepalive
        self.persister = Persister(self.data_file, lambda: dump_namespaces(self.db.roots))

    async def __call__(self, scope: AsgiMessage, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            segments = _split_raw_path(scope)
            if len(segments) >= 2 and segments[1] == ".standin":
                await self._control(scope, segments[2:], receive, send)
                return
            await self._rtdb(scope, segments, receive, send)
        except RtdbError as error:
            await self._send_error(send, error)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.db.hub.close_all()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def close_streams(self) -> None:
        """End every open event stream cleanly (used when the server shuts down)."""
        self.db.hub.close_all()

    @staticmethod
    async def _send_error(send: Send, error: RtdbError) -> None:
        if error.status == 499:
            return
        headers = list(_JSON_HEADERS)
        headers.extend((k.lower().encode(), v.encode()) for k, v in error.headers.items())
        body = error.body if error.has_body else {"error": error.message}
        await send_response(send, error.status, encode_json(body), headers)

    # ----------------------------------------------------------------------------------------
    # RTDB REST

    async def _rtdb(
        self, scope: AsgiMessage, segments: list[str], receive: Receive, send: Send
    ) -> None:
        method = scope["method"].upper()
        if method == "OPTIONS":
            await self._preflight(send)
            return
        request = parse_request(scope, segments)
        if not request.is_stream:
            self.db.stats.count(request.method)
        check_params(request)
        if request.token is not None and request.token in self.db.revoked:
            raise RtdbError(401, "Auth token is expired")
        if request.is_stream:
            await self._stream(request, receive, send)
        elif request.method == "GET":
            await self._get(request, send)
        elif request.method in _WRITE_METHODS:
            await self._write(request, receive, send)
        else:
            raise RtdbError(405, f"Method {request.method} is not supported")

    @staticmethod
    async def _preflight(send: Send) -> None:
        headers = [
            (b"access-control-allow-origin", b"*"),
            (b"access-control-allow-methods", b"GET, PUT, POST, PATCH, DELETE, OPTIONS"),
            (b"access-control-allow-headers", b"*"),
            (b"access-control-max-age", b"3600"),
        ]
        await send_response(send, 200, b"", headers)

    def _check_access(self, request: Request, path: Path) -> None:
        if self.db.denied(path, request.admin):
            raise RtdbError(401, "Permission denied")

    async def _get(self, request: Request, send: Send) -> None:
        if "if-match" in request.headers:
            raise bad_request("if-match is not supported for GET requests")
        query = parse_query(request.params)
        self._check_access(request, request.path)
        value = get_at(self.db.root(request.ns), request.path)
        etag = etag_of(value)
        headers = list(_JSON_HEADERS)
        if request.wants_etag or "if-none-match" in request.headers:
            headers.append(_etag_header(etag))
        if_none_match = request.headers.get("if-none-match")
        if if_none_match is not None and clean_etag(if_none_match) == etag:
            await send_response(send, 304, b"", headers)
            return
        result: Node
        if request.params.get("shallow") == "true":
            result = {key: True for key in value} if isinstance(value, dict) else value
        elif query is not None:
            result = run_query(value, query)
        else:
            result = value
        if request.silent:
            await send_response(send, 204, b"", headers[1:])
            return
        body = encode_json(to_output(result), request.pretty)
        callback = request.params.get("callback")
        if callback is not None:
            headers[0] = (b"content-type", b"application/javascript; charset=utf-8")
            body = callback.encode() + b"(" + body + b");"
        download = request.params.get("download")
        if download is not None:
            disposition = f'attachment; filename="{download}"'.encode("latin-1", "replace")
            headers.append((b"content-disposition", disposition))
        await send_response(send, 200, body, headers)

    def _write_ops(self, request: Request, body: object) -> tuple[list[tuple[Path, object]], str]:
        """The locations a write replaces, with the raw values; and the push id of a POST."""
        path = request.path
        if request.method == "PUT":
            return [(path, body)], ""
        if request.method == "DELETE":
            return [(path, None)], ""
        if request.method == "POST":
            push_id = self.db.push_ids.next_id()
            return [((*path, push_id), body)], push_id
        if not isinstance(body, dict):
            raise bad_request("Invalid data; couldn't parse JSON object.")
        ops = [((*path, *parse_path(key, what="data")), val) for key, val in body.items()]
        for op_path, _ in ops:
            if op_path == path:
                raise bad_request("Invalid data; an update key can't be empty")
        clash = overlapping(op_path for op_path, _ in ops)
        if clash is not None:
            raise bad_request(
                f"Invalid data; path {path_str(clash[1])} is an ancestor or a copy of "
                f"{path_str(clash[0])} in the same update"
            )
        return ops, ""

    def _check_conditions(self, request: Request) -> None:
        if request.method == "PATCH" and (request.wants_etag or "if-match" in request.headers):
            raise bad_request("ETags (X-Firebase-ETag, if-match) are not supported for PATCH")
        if request.method == "POST" and "if-match" in request.headers:
            raise bad_request("if-match is not supported for POST requests")
        if_match = request.headers.get("if-match")
        if if_match is None:
            return
        current = get_at(self.db.root(request.ns), request.path)
        current_etag = etag_of(current)
        if clean_etag(if_match) != current_etag:
            raise RtdbError(
                412,
                "ETag mismatch",
                headers={"ETag": current_etag},
                body=to_output(current),
                has_body=True,
            )

    async def _write(self, request: Request, receive: Receive, send: Send) -> None:
        raw_body = await read_body(receive)
        body = None if request.method == "DELETE" else decode_json(raw_body)
        raw_ops, push_id = self._write_ops(request, body)
        for op_path, _ in raw_ops:
            if len(op_path) > MAX_DEPTH:
                raise bad_request(f"Invalid path: more than {MAX_DEPTH} levels deep")
            self._check_access(request, op_path)
        self._check_conditions(request)
        root = self.db.root(request.ns)
        stamp = now_ms()
        ops = [
            WriteOp(op_path, prepare_value(raw, get_at(root, op_path), len(op_path), stamp))
            for op_path, raw in raw_ops
        ]
        self.db.apply(request.ns, request.path, ops, patch=request.method == "PATCH")
        await self.persister.flush()
        await self._write_response(request, ops, push_id, send)

    async def _write_response(
        self, request: Request, ops: list[WriteOp], push_id: str, send: Send
    ) -> None:
        headers = list(_JSON_HEADERS)
        if request.wants_etag:
            etag = NULL_ETAG if request.method == "DELETE" else etag_of(ops[0].value)
            headers.append(_etag_header(etag))
        if request.silent:
            await send_response(send, 204, b"", headers[1:])
            return
        result: OutValue
        if request.method == "POST":
            result = {"name": push_id}
        elif request.method == "PATCH":
            base = len(request.path)
            result = {"/".join(op.path[base:]): to_output(op.value) for op in ops}
        else:
            result = to_output(ops[0].value)
        await send_response(send, 200, encode_json(result, request.pretty), headers)

    async def _stream(self, request: Request, receive: Receive, send: Send) -> None:
        query = parse_query(request.params)
        self._check_access(request, request.path)
        listener = Listener(request.ns, request.path, query, request.token, request.admin)
        self.db.stats.stream_opens += 1
        self.db.hub.open(listener, self.db.root(request.ns))
        await serve_stream(listener, self.db.hub, receive, send, self.keepalive)

    # ----------------------------------------------------------------------------------------
    # Test control endpoints (not part of the RTDB API)

    async def _control(
        self, scope: AsgiMessage, names: list[str], receive: Receive, send: Send
    ) -> None:
        method: str = scope["method"].upper()
        name = "/".join(names)
        routes = {
            ("POST", "reset"): self._reset,
            ("POST", "rules"): self._set_rules,
            ("GET", "rules"): self._get_rules,
            ("POST", "revoke"): self._revoke,
            ("GET", "stats"): self._stats,
            ("POST", "drop-streams"): self._drop_streams,
        }
        handler = routes.get((method, name))
        if handler is None:
            known = {route for _, route in routes}
            status = 405 if name in known else 404
            raise RtdbError(status, f"No control endpoint {method} /.standin/{name}")
        body = await read_body(receive)
        result = await handler(body)
        await send_response(send, 200, encode_json(result))

    async def _reset(self, _body: bytes) -> dict[str, Any]:
        self.db.reset()
        await self.persister.flush()
        return {"ok": True}

    async def _set_rules(self, body: bytes) -> dict[str, Any]:
        spec = decode_json(body)
        deny = spec.get("deny") if isinstance(spec, dict) else None
        if not isinstance(deny, list) or not all(isinstance(item, str) for item in deny):
            raise bad_request('Expected {"deny": ["path/prefix", ...]}')
        self.db.deny = [tuple(seg for seg in item.split("/") if seg) for item in deny]
        cancelled = self.db.hub.finish_where(
            lambda listener: self.db.denied(listener.path, listener.admin),
            "cancel",
            "Permission denied",
        )
        return {"deny": [path_str(rule) for rule in self.db.deny], "cancelled": cancelled}

    async def _get_rules(self, _body: bytes) -> dict[str, Any]:
        return {
            "deny": [path_str(rule) for rule in self.db.deny],
            "revoked": sorted(self.db.revoked),
        }

    async def _revoke(self, body: bytes) -> dict[str, Any]:
        spec = decode_json(body)
        token = spec.get("token") if isinstance(spec, dict) else None
        if not isinstance(token, str) or not token:
            raise bad_request('Expected {"token": "..."}')
        self.db.revoked.add(token)
        revoked = self.db.hub.finish_where(
            lambda listener: listener.token == token,
            "auth_revoked",
            "credential is no longer valid",
        )
        return {"revoked_streams": revoked}

    async def _stats(self, _body: bytes) -> dict[str, Any]:
        return self.db.stats.as_json(len(self.db.hub))

    async def _drop_streams(self, _body: bytes) -> dict[str, Any]:
        return {"dropped": self.db.hub.drop_all()}


def create_app(data_file: str | FilePath | None = None, keepalive: float = 30.0) -> StandinApp:
    return StandinApp(data_file=data_file, keepalive=keepalive)
