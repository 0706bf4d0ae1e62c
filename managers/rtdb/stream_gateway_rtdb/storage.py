"""`RtdbStreamStorage`: streams in the Firebase Realtime Database, over its REST API.

Requests per operation (``R`` = round trip; see `_layout` for where things live):

- ``create``: 2 R: a GET of the meta with ``X-Firebase-ETag: true``, then a PUT with
  ``if-match`` (so an existing id is never overwritten: 412 -> `StreamExistsError`).
- ``append``: 1 PUT of the batch at its own key (``print=silent``). The meta is *not*
  written: its ``length`` lags until the next renewal or the finish.
- ``read``: usually 1 GET, ``orderBy="$key"&startAt=<offset's key>&limitToFirst=k``;
  2 when ``offset`` falls inside a batch (one more GET,
  ``endAt=<offset's key>&limitToLast=1``, finds the batch that holds it). Batches
  before the one holding ``offset`` are never fetched. Batches a listener of this
  process already received are served from memory.
- ``load``: 1 GET of the meta; 1 more (the last batch, ``limitToLast=1``) while the
  stream is open, since the stored length may lag. For a stream this process follows
  or writes (so likely open), both at once: the answer is then one round trip old.
- ``compact``: 5 R: a GET of the meta with its ETag and a conditional PUT claiming it,
  a shallow GET of the batch keys and one multi-path PATCH marking it, writing the
  entries and deleting the batches they cover; a shallow GET again, then one PATCH of
  nulls per 500 old batches left (see `_compaction`).
- ``finish``: 1 PATCH of the meta. ``request_cancel``: a GET and a conditional PUT.
- ``renew``: one GET per stream (its cancel flag and status), then one multi-path PATCH
  of every lease: ``N + 1`` requests per renewal round for ``N`` streams written here.
- ``list_streams``: queries ``orderBy="created_at"&endAt=<cursor>&limitToLast=k`` on
  the metas, walking down from the cursor (status, flow and owner are checked on the
  metas read; a page reads at most `_LIST_SCAN` of them, then hands back a cursor); one
  more GET per open stream listed, for its length. The database needs
  ``".indexOn": ["expires_at", "created_at"]`` on ``<root>/meta``.
- ``purge``: a query ``orderBy="expires_at"&endAt=now`` on the metas, then one
  multi-path PATCH of nulls per 200 expired streams (metas and batches together).
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, nullcontext
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx

from stream_gateway import StreamExistsError, UnavailableError
from stream_gateway.streams import (
    StreamFilter,
    StreamPage,
    StreamRecord,
    StreamStorage,
    Terminal,
    scanned_page,
)

from . import _compaction
from ._auth import EMULATOR_TOKEN, TokenSource, resolve_endpoint
from ._calls import gather, operation
from ._client import Conflict, RestClient
from ._layout import (
    batch_key,
    check_key,
    check_root,
    decode_record,
    encode_batch,
    encode_record,
    encode_terminal,
)
from ._read import BatchReader
from ._watch import BatchCache, watch_stream

__all__ = ["RtdbStreamStorage"]

_PURGE_ROUND = 200
_LIST_SCAN = 1000  # metas one `list_streams` call reads at most
_CANCEL_TRIES = 5


@dataclass
class _Written:
    """A stream this storage created and has not finished: its lock and committed length."""

    length: int = 0
    lock: anyio.Lock = field(default_factory=anyio.Lock)


class RtdbStreamStorage(StreamStorage):
    """Streams in a Realtime Database: meta and chunk batches in separate subtrees.

    ``database_url``: ``https://<name>.firebaseio.com`` (or an emulator URL
    ``http://host:port?ns=<name>``; ``FIREBASE_DATABASE_EMULATOR_HOST`` is honoured as
    firebase-admin does). ``app``: the firebase-admin app whose credential signs the
    requests (default: the default app); ``credential`` overrides it. ``root``: the path
    everything lives under. ``http``: an `httpx.AsyncClient` to use (not closed here).
    ``timeout``: seconds for one request. ``keepalive``: the server's keep-alive interval;
    a listener that hears nothing for twice as long reconnects.
    """

    shared = True

    def __init__(
        self,
        database_url: str,
        *,
        app: Any = None,
        root: str = "streams",
        flush_interval: float = 0.1,
        http: httpx.AsyncClient | None = None,
        credential: Any = None,
        timeout: float = 10.0,
        keepalive: float = 30.0,
    ) -> None:
        if timeout <= 0 or keepalive <= 0:
            raise ValueError("timeout and keepalive must be positive")
        self.endpoint = resolve_endpoint(database_url)
        self.root = check_root(root)
        self.flush_interval = flush_interval
        self.timeout = timeout
        self.keepalive = keepalive
        self._app = app
        self._credential = credential
        self._given_http = http
        self._client: RestClient | None = None
        self._written: dict[str, _Written] = {}
        self._caches: dict[str, BatchCache] = {}
        self._claims: dict[str, float] = {}  # compaction claims whose mark has not landed
        self._reader = BatchReader()
        self._closed = False
        self._in_flight = 0
        self._drained: anyio.Event | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Resolve the credential (no network yet) and open the HTTP client."""
        if self._client is not None:
            raise RuntimeError("RtdbStreamStorage.start() may be called once")
        if self._credential is not None:
            tokens = TokenSource(credential=self._credential)
        elif self.endpoint.emulator:
            tokens = TokenSource(fixed=EMULATOR_TOKEN)
        else:
            tokens = TokenSource(credential=self._app_credential())
        # No pool limit: each watched stream holds two long-lived connections.
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=32)
        http = self._given_http or httpx.AsyncClient(limits=limits)
        self._client = RestClient(
            self.endpoint, tokens, http, timeout=self.timeout, listen_timeout=2 * self.keepalive
        )

    async def close(self) -> None:
        """Let calls in flight finish (up to ``timeout``), then close the HTTP client
        unless it was given. Later calls raise `RuntimeError`."""
        self._closed = True
        if self._in_flight:
            self._drained = anyio.Event()
            with anyio.move_on_after(self.timeout):
                await self._drained.wait()
        if self._client is not None and self._given_http is None:
            await self._client.http.aclose()

    def _app_credential(self) -> Any:
        # firebase-admin ships no type information; it is only needed here.
        firebase_admin = importlib.import_module("firebase_admin")
        app = self._app if self._app is not None else firebase_admin.get_app()
        return app.credential

    @property
    def client(self) -> RestClient:
        """The REST client; raises if the storage was not started."""
        if self._client is None:
            raise RuntimeError("RtdbStreamStorage is not started (a StreamManager starts it)")
        return self._client

    def _meta(self, stream_id: str) -> str:
        return f"{self.root}/meta/{check_key(stream_id)}"

    def _batches(self, stream_id: str) -> str:
        return f"{self.root}/batches/{check_key(stream_id)}"

    # -- the contract ------------------------------------------------------------------

    @operation
    async def create(self, record: StreamRecord) -> None:
        path, value = self._meta(record.stream_id), encode_record(record)
        current, etag = await self.client.get_with_etag(path)
        if current is None:
            try:
                await self.client.put(path, value, if_match=etag)
            except Conflict as conflict:
                current = conflict.current
        # Equal data is our own earlier attempt whose answer was lost: a retry succeeds.
        if current is not None and current != value:
            raise StreamExistsError(f"stream {record.stream_id} exists")
        self._written[record.stream_id] = _Written()

    @operation
    async def append(self, stream_id: str, offset: int, chunks: Sequence[bytes]) -> None:
        path = f"{self._batches(stream_id)}/{batch_key(offset)}"
        await self.client.put(path, encode_batch(offset, chunks))
        written = self._written.get(stream_id)
        if written is not None:
            written.length = max(written.length, offset + len(chunks))

    @operation
    async def finish(
        self, stream_id: str, length: int, terminal: Terminal, *, now: float, expires_at: float
    ) -> None:
        update = {
            "status": terminal.kind,
            "terminal": encode_terminal(terminal),
            "length": length,
            "updated_at": now,
            "expires_at": expires_at,
            "lease_until": None,
        }
        written = self._written.get(stream_id)
        async with written.lock if written is not None else nullcontext():
            # Only an open stream: an end recorded already (abandoned) stands.
            if await self._finish_open(stream_id, lambda meta: update) is None:
                await self.client.patch(self._meta(stream_id), update)
            self._written.pop(stream_id, None)

    @operation
    async def abandon(
        self, stream_id: str, terminal: Terminal, *, now: float, expires_at: float
    ) -> bool:
        batches = self._batches(stream_id)

        async def end_of(meta: dict[str, Any]) -> dict[str, Any] | None:
            lease = meta.get("lease_until")
            if not isinstance(lease, int | float) or lease >= now:
                return None  # still leased (renewed meanwhile)
            committed = await self._reader.last_end(self.client, batches)
            return {
                "status": terminal.kind,
                "terminal": encode_terminal(terminal),
                "length": max(_int(meta.get("length")), committed),
                "updated_at": now,
                "expires_at": expires_at,
                "lease_until": None,
            }

        return bool(await self._finish_open(stream_id, end_of))

    async def _finish_open(
        self,
        stream_id: str,
        fields: Callable[
            [dict[str, Any]], dict[str, Any] | Awaitable[dict[str, Any] | None] | None
        ],
    ) -> bool | None:
        """Apply ``fields(meta)`` to the stream's meta if it is open, conditionally on
        its ETag. True when written; False when finished (or ``fields`` declined);
        ``None`` when there is no meta."""
        path = self._meta(stream_id)
        for _ in range(_CANCEL_TRIES):  # a transaction: read, then write if unchanged
            current, etag = await self.client.get_with_etag(path)
            if not isinstance(current, dict):
                return None
            if current.get("status") != "open":
                return False
            update = fields(current)
            if inspect.isawaitable(update):
                update = await update
            if update is None:
                return False
            value = {k: v for k, v in {**current, **update}.items() if v is not None}
            try:
                await self.client.put(path, value, if_match=etag)
            except Conflict:
                continue
            return True
        raise UnavailableError("stream metadata kept changing; its end was not recorded")

    @operation
    async def load(self, stream_id: str) -> StreamRecord | None:
        meta_path, batches_path = self._meta(stream_id), self._batches(stream_id)
        end: int | None = None
        if stream_id in self._caches or stream_id in self._written:
            # Likely open (followed or written here): both queries at once, so that the
            # answer is one round trip old, not two.
            meta, end = await gather(
                [
                    lambda: self.client.get(meta_path),
                    lambda: self._reader.last_end(self.client, batches_path),
                ]
            )
        else:
            meta = await self.client.get(meta_path)
        record = decode_record(stream_id, meta)
        if record is not None and record.status == "open":
            if end is None:
                end = await self._reader.last_end(self.client, batches_path)
            record.length = max(record.length, end)
        return record

    @operation
    async def read(self, stream_id: str, offset: int, limit: int) -> list[bytes]:
        path = self._batches(stream_id)
        cache = self._caches.get(stream_id)
        held = cache.read(offset, limit) if cache is not None else []
        if held:
            return held
        return await self._reader.read(self.client, path, stream_id, offset, limit)

    @operation
    async def compact(self, stream_id: str, length: int, entries: Sequence[bytes]) -> bool:
        """Claim (a conditional PUT of the meta), mark and write the entries (one
        multi-path PATCH), then delete the old batches; see `_compaction`."""
        _compaction.check_entries(length, entries)
        meta, batches = self._meta(stream_id), self._batches(stream_id)
        own = self._claims.pop(stream_id, None)
        claimed = await _compaction.claim(self.client, meta, length, own=own)
        if claimed is None:
            # Compacted already: finish what a compaction that died part-way left.
            await _compaction.delete_leftovers(self.client, batches)
        if not claimed:
            return False
        self._claims[stream_id] = claimed  # a retry after a failed mark takes it again
        await _compaction.mark(self.client, self.root, stream_id, entries)
        del self._claims[stream_id]
        cache = self._caches.get(stream_id)
        if cache is not None:
            cache.clear()
        await _compaction.delete_leftovers(self.client, batches)
        return True

    @operation
    async def renew(
        self, stream_ids: Sequence[str], lease_until: float, expires_at: float
    ) -> set[str]:
        ids = sorted({sid for sid in stream_ids if sid in self._written})
        async with AsyncExitStack() as stack:
            for sid in ids:  # finish waits meanwhile, so no lease outlives its stream
                await stack.enter_async_context(self._written[sid].lock)
            found = await gather([self._meta_getter(sid) for sid in ids])
            metas = dict(zip(ids, found, strict=True))
            update: dict[str, Any] = {}
            cancelled: set[str] = set()
            for sid in ids:
                meta = metas.get(sid)
                written = self._written.get(sid)
                if not isinstance(meta, dict) or meta.get("status") != "open":
                    cancelled.add(sid)  # finished elsewhere (abandoned) or gone: stop it
                    continue
                if written is None:
                    continue
                update[f"{sid}/lease_until"] = lease_until
                update[f"{sid}/expires_at"] = expires_at
                if written.length > _int(meta.get("length")):
                    update[f"{sid}/length"] = written.length
                if meta.get("cancel_requested") is True or meta.get("stop_requested") is True:
                    cancelled.add(sid)
            if update:
                await self.client.patch(f"{self.root}/meta", update)
        return cancelled

    def _meta_getter(self, stream_id: str) -> Callable[[], Awaitable[Any]]:
        return functools.partial(self.client.get, self._meta(stream_id))

    @operation
    async def request_cancel(self, stream_id: str) -> bool:
        return await self._flag(stream_id, "cancel_requested")

    @operation
    async def request_stop(self, stream_id: str) -> bool:
        return await self._flag(stream_id, "stop_requested")

    async def _flag(self, stream_id: str, flag: str) -> bool:
        path = self._meta(stream_id)
        for _ in range(_CANCEL_TRIES):  # a transaction: read, then write if unchanged
            current, etag = await self.client.get_with_etag(path)
            if not isinstance(current, dict) or current.get("status") != "open":
                return False
            if current.get(flag) is True:
                return True
            try:
                await self.client.put(path, {**current, flag: True}, if_match=etag)
            except Conflict:
                continue
            return True
        raise UnavailableError("stream metadata kept changing; cancellation not recorded")

    @operation
    async def list_streams(self, selection: StreamFilter) -> StreamPage:
        """See the module docstring: metas by ``created_at``, newest first, from the cursor."""
        top = None if selection.after is None else selection.after[0]
        scanned: list[StreamRecord] = []
        ties: set[str] = set()  # ids read whose created_at is `top` (endAt is inclusive)
        wanted = selection.limit + 1
        exhausted = False
        while len(scanned) < _LIST_SCAN and not exhausted:
            step = min(max(wanted * 2, 64), _LIST_SCAN - len(scanned)) + len(ties)
            params: dict[str, Any] = {"orderBy": "created_at", "limitToLast": step}
            if top is not None:
                params["endAt"] = top
            found = await self.client.get(f"{self.root}/meta", **params) or {}
            exhausted = len(found) < step
            batch = [
                record
                for sid, meta in found.items()
                if _is_key(sid) and sid not in ties
                and (record := decode_record(sid, meta)) is not None
            ]  # fmt: skip
            if not batch:
                break
            batch.sort(key=lambda r: (r.created_at, r.stream_id), reverse=True)
            scanned += [r for r in batch if selection.follows(r)]
            if batch[-1].created_at != top:
                ties = set()
            top = batch[-1].created_at
            ties.update(r.stream_id for r in batch if r.created_at == top)
            if sum(1 for r in scanned if selection.matches(r)) >= wanted:
                break
        page = scanned_page(selection, scanned, exhausted=exhausted)
        for record in page.records:
            if record.status == "open":
                written = self._written.get(record.stream_id)
                end = (
                    written.length
                    if written is not None
                    else await self._reader.last_end(self.client, self._batches(record.stream_id))
                )
                record.length = max(record.length, end)
        return page

    @operation
    async def purge(self, now: float) -> int:
        total = 0
        while True:
            expired = await self.client.get(
                f"{self.root}/meta", orderBy="expires_at", endAt=now, limitToFirst=_PURGE_ROUND
            )
            ids = [sid for sid in expired or {} if _is_key(sid)]
            if not ids:
                return total
            update: dict[str, Any] = {}
            for sid in ids:
                update[f"meta/{sid}"] = None
                update[f"batches/{sid}"] = None
            await self.client.patch(self.root, update)
            total += len(ids)
            if len(ids) < _PURGE_ROUND:
                return total

    def watch(self, stream_id: str) -> AsyncIterator[None]:
        """Yield whenever the stream may have changed; see `stream_gateway_rtdb._watch`."""
        meta, batches = self._meta(stream_id), self._batches(stream_id)
        return self._watch(stream_id, meta, batches)

    async def _watch(self, stream_id: str, meta: str, batches: str) -> AsyncIterator[None]:
        cache = self._caches[stream_id] = BatchCache()
        try:
            async for _ in watch_stream(self.client, meta, batches, cache):
                yield
        finally:
            if self._caches.get(stream_id) is cache:
                del self._caches[stream_id]


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _is_key(key: str) -> bool:
    try:
        check_key(key)
    except Exception:
        return False
    return True
