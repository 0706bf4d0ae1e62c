"""A Python client for flow endpoints (httpx): start, follow, resume by itself, cancel.

>>> async with httpx.AsyncClient() as http:                    # doctest: +SKIP
...     stream = stream_flow("http://127.0.0.1:8000/flows/chat", {"prompt": "hi"}, http=http)
...     async for token in stream:
...         print(token, end="")
...     answer = await stream.result()
"""

from __future__ import annotations

import bisect
import logging
import random
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import httpx

from ._errors import (
    GatewayError,
    InternalError,
    StreamNotFoundError,
    UnavailableError,
    error_from_status,
)
from ._ids import validate_stream_id
from ._json import dumps, loads

__all__ = ["FlowStream", "Reconnect", "Reset", "run_flow", "stream_flow"]

logger = logging.getLogger("stream_gateway.client")


class _ServerBusy(Exception):
    """A 502/503/504 while reconnecting: the server is restarting or overloaded."""


class _Compacted(Exception):
    """A 410 to a resume: the stream was compacted; replay it from offset 0."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.message)
        self.error = error


#: Replays from 0 after a 410 in a row before giving up (a stream is compacted once).
_MAX_REPLAYS = 3


_RESUMABLE = (httpx.TransportError, httpx.StreamError, _ServerBusy)
# Flows may be silent for minutes and the Genkit protocol has no pings: no read timeout.
_STREAM_TIMEOUT = httpx.Timeout(10.0, read=None)


@dataclass(frozen=True, slots=True)
class Reconnect:
    """How a `FlowStream` retries after a dropped connection: exponential backoff
    from ``base`` to ``cap`` seconds with full jitter, at most ``attempts`` times in a
    row (the count resets whenever a chunk arrives).

    The defaults keep trying for about 20 s on average, long enough for a server
    restarted by a deploy to come back (see docs/shutdown.md).
    """

    attempts: int = 10
    base: float = 0.1
    cap: float = 10.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before reconnect number ``attempt`` (from 1)."""
        return random.uniform(0, min(self.cap, self.base * 2 ** (attempt - 1)))


#: The request header that asks the Genkit endpoint for offsets and reset frames
#: (``data: {"message":X,"offset":N}``, ``data: {"reset":K,"offset":N}``).
RESETS_HEADER = "x-stream-resets"


@dataclass(frozen=True, slots=True)
class Reset:
    """Yielded by a `FlowStream` of a durable flow whose step attempt was retracted:
    drop the last ``dropped`` chunks you got (those from stream offset ``offset`` on);
    what comes next replaces them."""

    offset: int
    dropped: int


class FlowStream:
    """The chunks of one streaming run, then its result; resumes after drops.

    Iterate it for chunks (each exactly once, in order); `result` returns the output
    (or raises the flow's error as a `GatewayError`). A streaming durable flow may
    also yield a `Reset`: drop the last ``dropped`` chunks (a step attempt that failed
    or was lost streamed them); the chunks after it replace them. Any stream yields
    ``Reset(0, n)`` when it was compacted before a resume could continue it (the
    server answered 410): drop everything shown; the whole stream comes again, its
    text deltas joined into fewer chunks. After a dropped connection it
    reconnects with the stream id and the next offset it needs. ``stream_id`` is
    known once the first response has arrived.

    A start carries an ``Idempotency-Key`` (``idempotency_key``, else a random UUID):
    if it fails before the server answered (connection error, 502/503/504), it is
    sent again with the same key and body, and a server with a stream manager
    returns the run the first attempt may have started instead of starting another.
    """

    def __init__(
        self,
        url: str,
        input: Any = None,
        *,
        http: httpx.AsyncClient,
        headers: Mapping[str, str] | None = None,
        stream_id: str | None = None,
        offset: int = 0,
        reconnect: Reconnect | None = None,
        idempotency_key: str | None = None,
        conversation: str | None = None,
    ) -> None:
        self.url = url
        self.conversation = conversation
        self.idempotency_key = idempotency_key or str(uuid.uuid4())
        self._answered = False  # a start got a response: retrying it is no longer blind
        self.stream_id = None if stream_id is None else validate_stream_id(stream_id)
        self.offset = offset
        self._input = input
        self._http = http
        self._headers = dict(headers or {})
        self._reconnect = reconnect or Reconnect()
        self._outcome: tuple[Any, GatewayError | None] | None = None
        self._shown: list[int] = []  # offsets of the chunks yielded, for resets
        self._chunks = self._follow()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._chunks

    async def result(self) -> Any:
        """Read to the end (chunks not yet consumed are dropped) and return the output."""
        async for _ in self._chunks:
            pass
        assert self._outcome is not None
        value, error = self._outcome
        if error is not None:
            raise error
        return value

    async def cancel(self) -> bool:
        """Ask the server to stop the flow (``DELETE <url>/streams/<id>``)."""
        if self.stream_id is None:
            raise UnavailableError("no stream id yet: nothing to cancel")
        response = await self._http.delete(
            f"{self.url.rstrip('/')}/streams/{self.stream_id}", headers=self._headers
        )
        _raise_for_error(response.status_code, response.content)
        return bool(response.json().get("cancelled"))

    async def stop(self) -> bool:
        """Ask the flow to finish now with what it has (``POST <url>/streams/<id>/stop``).

        The stream then ends with the flow's partial result, which `result` returns;
        keep reading it. False when the stream had already finished.
        """
        if self.stream_id is None:
            raise UnavailableError("no stream id yet: nothing to stop")
        response = await self._http.post(
            f"{self.url.rstrip('/')}/streams/{self.stream_id}/stop", headers=self._headers
        )
        _raise_for_error(response.status_code, response.content)
        return bool(response.json().get("stopped"))

    async def aclose(self) -> None:
        """Stop reading (the flow goes on on the server)."""
        await self._chunks.aclose()

    async def _follow(self) -> AsyncGenerator[Any, None]:
        failures = 0
        replays = 0
        while self._outcome is None:
            try:
                async for chunk in self._one_response():
                    failures = 0
                    yield chunk
                if self._outcome is None:
                    raise httpx.RemoteProtocolError("stream ended without a terminal frame")
            except _Compacted as exc:
                # Compacted since: what was shown goes, and the whole stream comes again.
                replays += 1
                if replays > _MAX_REPLAYS:
                    raise exc.error from None
                logger.info("stream %s was compacted; replaying it from 0", self.stream_id)
                dropped = len(self._shown)
                self._shown.clear()
                self.offset = 0
                if dropped:
                    yield Reset(0, dropped)
            except _RESUMABLE as exc:
                failures += 1
                if self.stream_id is None and self._answered:
                    # The server answered without a stream id (it has no stream
                    # manager): the run cannot be found again.
                    raise UnavailableError(f"connection lost before a stream id: {exc!r}") from exc
                if failures > self._reconnect.attempts:
                    raise UnavailableError(
                        f"gave up resuming stream {self.stream_id} after {failures - 1}"
                        f" attempts: {exc!r}"
                    ) from exc
                delay = self._reconnect.delay(failures)
                logger.info(
                    "stream %s dropped at offset %d (%s); resuming in %.2fs",
                    self.stream_id or f"(start, key {self.idempotency_key})",
                    self.offset,
                    exc,
                    delay,
                )
                await anyio.sleep(delay)
        if self._outcome[1] is not None:
            raise self._outcome[1]

    async def _one_response(self) -> AsyncIterator[Any]:
        headers = {
            "accept": "text/event-stream",
            "content-type": "application/json",
            RESETS_HEADER: "1",
        }
        headers.update(self._headers)
        if self.stream_id is not None:
            headers["x-genkit-stream-id"] = self.stream_id
            headers["x-genkit-stream-offset"] = str(self.offset)
        else:
            headers["idempotency-key"] = self.idempotency_key
            if self.conversation is not None:
                headers["x-conversation-id"] = self.conversation
        body = dumps({"data": self._input})
        async with self._http.stream(
            "POST", self.url, content=body, headers=headers, timeout=_STREAM_TIMEOUT
        ) as response:
            if response.status_code == 204:
                raise StreamNotFoundError("stream not found")
            if response.status_code in (502, 503, 504):
                raise _ServerBusy(f"HTTP {response.status_code}")
            self._answered = True
            if response.status_code == 410 and self.stream_id is not None:
                raise _Compacted(_error_of(response.status_code, await response.aread()))
            if response.status_code != 200:
                _raise_for_error(response.status_code, await response.aread())
            self.stream_id = self.stream_id or response.headers.get("x-genkit-stream-id")
            buffer = b""
            async for data in response.aiter_bytes():
                if b"\n\n" not in data and not (buffer.endswith(b"\n") and data[:1] == b"\n"):
                    buffer += data  # no frame ends here: no need to split the whole buffer
                    continue
                buffer += data
                *frames, buffer = buffer.split(b"\n\n")
                for frame in frames:
                    kind, value, offset = _parse_frame(frame)
                    if kind == "message":
                        offset = self.offset if offset is None else offset
                        if offset < self.offset:
                            continue  # seen already
                        self.offset = offset + 1
                        self._shown.append(offset)
                        yield value
                    elif kind == "reset":
                        assert offset is not None
                        self.offset = max(self.offset, offset + 1)
                        cut = bisect.bisect_left(self._shown, value)
                        dropped = len(self._shown) - cut
                        del self._shown[cut:]
                        yield Reset(value, dropped)
                    else:
                        self._outcome = (value, None) if kind == "result" else (None, value)
                        return


def _parse_frame(frame: bytes) -> tuple[str, Any, int | None]:
    """``(kind, value, offset)`` of one Genkit frame; the offset only when it carries one."""
    if frame.startswith(b"data: "):
        body = loads(frame[6:])
        if isinstance(body, dict):
            offset = body.get("offset")
            offset = offset if isinstance(offset, int) and not isinstance(offset, bool) else None
            if "message" in body:
                return "message", body["message"], offset
            if "result" in body:
                return "result", body["result"], None
            if isinstance(body.get("reset"), int) and offset is not None:
                return "reset", body["reset"], offset
    elif frame.startswith(b"error: "):
        error = loads(frame[7:]).get("error", {})
        return (
            "error",
            error_from_status(
                str(error.get("status")), str(error.get("message")), error.get("details")
            ),
            None,
        )
    raise InternalError("unexpected frame from server", details={"frame": frame[:200].decode()})


def _raise_for_error(status_code: int, content: bytes) -> None:
    if status_code >= 400:
        raise _error_of(status_code, content)


def _error_of(status_code: int, content: bytes) -> GatewayError:
    """The error an HTTP error response carries (``{"error": {...}}``), else one made
    from its status."""
    try:
        error = loads(content)["error"]
        return error_from_status(
            str(error.get("status")), str(error.get("message")), error.get("details")
        )
    except (GatewayError, KeyError, TypeError, AttributeError):
        return error_from_status(
            "UNAVAILABLE" if status_code >= 500 else "INTERNAL",
            f"HTTP {status_code}: {content[:200]!r}",
        )


def stream_flow(
    url: str,
    input: Any = None,
    *,
    http: httpx.AsyncClient,
    headers: Mapping[str, str] | None = None,
    stream_id: str | None = None,
    offset: int = 0,
    reconnect: Reconnect | None = None,
    idempotency_key: str | None = None,
    conversation: str | None = None,
) -> FlowStream:
    """Start a streaming run (or, with ``stream_id``, follow an existing stream from
    ``offset``). Nothing is sent until the stream is iterated.

    The start is sent with ``idempotency_key`` (default: a random UUID) and repeated
    safely if it fails before the server answers; see `FlowStream`. ``conversation``
    runs it as the next turn of that conversation (see docs/conversations.md).
    """
    return FlowStream(
        url,
        input,
        http=http,
        headers=headers,
        stream_id=stream_id,
        offset=offset,
        reconnect=reconnect,
        idempotency_key=idempotency_key,
        conversation=conversation,
    )


async def run_flow(
    url: str,
    input: Any = None,
    *,
    http: httpx.AsyncClient,
    headers: Mapping[str, str] | None = None,
) -> Any:
    """Run a flow without streaming and return its output; errors raise `GatewayError`."""
    response = await http.post(
        url,
        content=dumps({"data": input}),
        headers={"content-type": "application/json", **(headers or {})},
    )
    _raise_for_error(response.status_code, response.content)
    return loads(response.content)["result"]
