"""The Realtime Database REST API over httpx: requests, errors and event streams.

Error mapping (the manager retries `UnavailableError` with backoff):

- connection errors, timeouts, 429 and 5xx: `UnavailableError`
- 401 and 403: `PermissionDeniedError` (a credential's token is refreshed and the
  request tried once more first, since a 401 may only mean it expired)
- 400: `InvalidArgumentError` (a malformed request: a bug, or a missing ``.indexOn``)
- 412 on a conditional write: `Conflict`, carrying the current value
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from stream_gateway import (
    GatewayError,
    InternalError,
    InvalidArgumentError,
    PermissionDeniedError,
    UnavailableError,
)

from ._auth import Endpoint, TokenSource

__all__ = ["Conflict", "Event", "RestClient", "query"]

Event = tuple[str, Any]
"""A server-sent event: its name and its data decoded from JSON."""
_MAX_REDIRECTS = 5
_REDIRECTS = (301, 302, 303, 307, 308)


class Conflict(Exception):
    """A conditional write found other data (HTTP 412); ``current`` is that data."""

    def __init__(self, current: Any) -> None:
        super().__init__("ETag mismatch")
        self.current = current


def query(**params: Any) -> dict[str, str]:
    """Query parameters with JSON-encoded values, as the REST API expects them."""
    return {name: json.dumps(value) for name, value in params.items()}


def _server_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])[:200]
    return response.reason_phrase


def error_for(response: httpx.Response) -> GatewayError:
    """The library error for a failed response."""
    status = response.status_code
    text = f"Realtime Database answered {status}: {_server_message(response)}"
    if status in (401, 403):
        return PermissionDeniedError(text)
    if status == 400:
        return InvalidArgumentError(text)
    if status == 429 or status >= 500:
        return UnavailableError(text)
    return InternalError(text)


def unreachable(exc: httpx.HTTPError) -> UnavailableError:
    return UnavailableError(f"Realtime Database unreachable: {type(exc).__name__}")


class RestClient:
    """REST calls on ``<base>/<path>.json``, with auth, redirects and error mapping.

    The server may redirect (307) to another host; redirects are followed here, by
    hand, because httpx drops the ``Authorization`` header on a change of host.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        tokens: TokenSource,
        http: httpx.AsyncClient,
        *,
        timeout: float,
        listen_timeout: float,
    ) -> None:
        self.endpoint = endpoint
        self.tokens = tokens
        self.http = http
        self.timeout = httpx.Timeout(timeout)
        self.listen_timeout = httpx.Timeout(timeout, read=listen_timeout)

    def url(self, path: str) -> str:
        return f"{self.endpoint.base_url}/{path}.json"

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        stream: bool = False,
    ) -> httpx.Response:
        """One request, retried once with a fresh token after a 401. Not yet checked."""
        all_params = {**self.endpoint.params, **(params or {})}
        content = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        for attempt in (1, 2):
            token = await self.tokens.token()
            all_headers = {**(headers or {}), "Authorization": f"Bearer {token}"}
            url = self.url(path)
            timeout = self.listen_timeout if stream else self.timeout
            for _ in range(_MAX_REDIRECTS + 1):
                request = self.http.build_request(
                    method, url, params=all_params, content=content,
                    headers=all_headers, timeout=timeout,
                )  # fmt: skip
                try:
                    response = await self.http.send(request, stream=stream)
                except httpx.HTTPError as exc:
                    raise unreachable(exc) from exc
                if response.status_code not in _REDIRECTS or "location" not in response.headers:
                    break
                await response.aclose()
                url, all_params = response.headers["location"], {}
            if response.status_code == 401 and attempt == 1 and self.tokens.refreshable:
                await response.aclose()
                self.tokens.invalidate(token)
                continue
            return response
        raise AssertionError("unreachable")

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A checked request: the response of a 2xx, else the mapped error."""
        response = await self._send(method, path, **kwargs)
        if response.status_code == 412:
            raise Conflict(_json(response))
        if not 200 <= response.status_code < 300:
            raise error_for(response)
        return response

    async def get(self, path: str, **params: Any) -> Any:
        """The value at ``path`` (``None`` if there is none); ``params`` JSON-encoded."""
        return _json(await self.request("GET", path, params=query(**params)))

    async def get_with_etag(self, path: str) -> tuple[Any, str]:
        response = await self.request("GET", path, headers={"X-Firebase-ETag": "true"})
        etag = response.headers.get("etag")
        if etag is None:
            raise InternalError("Realtime Database sent no ETag")
        return _json(response), etag

    async def put(self, path: str, value: Any, *, if_match: str | None = None) -> None:
        headers = {} if if_match is None else {"if-match": if_match}
        await self.request("PUT", path, params={"print": "silent"}, body=value, headers=headers)

    async def patch(self, path: str, value: dict[str, Any]) -> None:
        await self.request("PATCH", path, params={"print": "silent"}, body=value)

    @asynccontextmanager
    async def listen(self, path: str, **params: Any) -> AsyncIterator[AsyncIterator[Event]]:
        """An open event stream at ``path``: yields its events until it ends.

        A read that waits longer than ``listen_timeout`` (twice the server's keep-alive
        interval) raises `UnavailableError`, as does a dropped connection.
        """
        headers = {"Accept": "text/event-stream"}
        response = await self._send(
            "GET", path, params=query(**params), headers=headers, stream=True
        )
        try:
            if response.status_code != 200:
                await response.aread()
                raise error_for(response)
            yield _events(response)
        finally:
            await response.aclose()


def _json(response: httpx.Response) -> Any:
    if response.status_code == 204 or not response.content:
        return None
    try:
        return response.json()
    except ValueError as exc:
        raise InternalError("Realtime Database sent malformed JSON") from exc


async def _events(response: httpx.Response) -> AsyncIterator[Event]:
    name, data = "", []
    try:
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif not line and name:
                text = "\n".join(data)
                try:
                    value = json.loads(text) if text else None
                except ValueError:
                    value = text
                yield name, value
                name, data = "", []
    except httpx.HTTPError as exc:
        raise unreachable(exc) from exc
