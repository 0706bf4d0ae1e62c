"""`RedisStreamStorage`: streams in Redis, a hash and a Redis Stream per stream.

Commands per operation (see `_layout` for the keys, `_scripts` for the scripts):

- ``create``: 1 script (``EVALSHA``) writing the record, then 1 ``ZADD`` of its expiry.
- ``append``: 1 script: ``XADD`` of one entry ``<first offset>-<count>`` holding the
  batch, and the record's ``length``, together; a retry skips what is already there.
- ``read``: 1 script: the entry holding the offset (``XREVRANGE ... COUNT 1``), then
  the following ones (``XRANGE``) up to the limit. Batches a watch of this process
  already received are served from memory.
- ``load``: 1 ``HGETALL``; the stored length is exact (appends update it).
- ``finish``: 1 script (record, terminal entry, key expiry), then 1 ``ZADD``.
- ``renew``: one pipeline of 1 script per stream, then 1 ``ZADD`` for them all.
- ``compact``: 1 script: checks the record, makes the log anew (the entries as one
  batch, the terminal, a marker that wakes other processes' watches) and marks it.
- ``request_cancel``: 1 script. ``purge``: ``ZRANGEBYSCORE``, a pipeline of 1 script
  per expired stream, ``ZREM`` from both indexes.
- ``list_streams``: ``ZREVRANGEBYSCORE`` on the creation index from the cursor, then
  one pipeline of ``HGETALL`` per candidate; status, flow and owner are checked on the
  records read (a page scans at most `_LIST_SCAN` candidates, then hands back a cursor).
- ``watch``: 1 ``XREVRANGE ... COUNT 1``, then ``XREAD BLOCK`` on the log in a loop.

Expiry is Redis's own: both keys of a stream carry the record's ``expires_at`` as
their TTL (``PEXPIREAT``), moved on every renewal and at the finish. `purge` only
removes what Redis has not yet expired, and keeps its count honest.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

from redis import exceptions as rex
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript

from stream_gateway import (
    InternalError,
    InvalidArgumentError,
    ResourceExhaustedError,
    StreamClosedError,
    StreamExistsError,
    StreamNotFoundError,
    UnavailableError,
)
from stream_gateway.streams import (
    StreamFilter,
    StreamPage,
    StreamRecord,
    StreamStorage,
    Terminal,
    scanned_page,
)

from . import _scripts
from ._coalesce import Coalescer
from ._layout import (
    check_prefix,
    created_key,
    decode_record,
    encode_record,
    expiry_key,
    log_key,
    meta_key,
    parse_entry_id,
)
from ._watch import BatchCache

__all__ = ["RedisStreamStorage"]

_SCRIPT_NAMES = ("CREATE", "APPEND", "FINISH", "ABANDON", "CANCEL", "STOP", "READ", "COMPACT")
_PURGE_ROUND = 256
_LIST_SCAN = 1000  # candidates one `list_streams` call reads at most
_SCRIPT_ERRORS: dict[str, type[Exception]] = {
    "SG_NOT_FOUND": StreamNotFoundError,
    "SG_EXISTS": StreamExistsError,
    "SG_CLOSED": StreamClosedError,
    "SG_GAP": InternalError,
}
# Conditions that pass: a restart, a failover, a cluster resharding, a full disk.
_PASSING = (
    rex.ConnectionError,  # includes BusyLoadingError (the server is loading its data)
    rex.TimeoutError,
    rex.ReadOnlyError,
    rex.TryAgainError,
    rex.ClusterDownError,
    rex.MasterDownError,
)


@contextmanager
def _translated() -> Iterator[None]:
    """Redis errors as the gateway's: passing conditions become `UnavailableError`
    (which the manager retries); the scripts' own codes their errors."""
    try:
        yield
    except (rex.AuthenticationError, rex.AuthorizationError, rex.NoPermissionError) as exc:
        raise InternalError(
            f"Redis refused the credentials or the ACL forbids a command: {exc} "
            "(check the password and user in the Redis URL)"
        ) from exc
    except rex.OutOfMemoryError as exc:
        raise ResourceExhaustedError(
            f"Redis is out of memory ({exc}): raise maxmemory or shorten the stream TTL"
        ) from exc
    except _PASSING as exc:
        raise UnavailableError(f"Redis unavailable: {exc}") from exc
    except rex.ResponseError as exc:
        message = str(exc)
        code, _, rest = message.partition(" ")
        if code in _SCRIPT_ERRORS:
            raise _SCRIPT_ERRORS[code](rest.split(" script: ")[0]) from None
        if code == "MISCONF":  # persistence is failing (a full disk): writes refused
            raise UnavailableError(f"Redis unavailable: {message}") from exc
        raise InternalError(f"Redis refused a command: {message}") from exc


def _ms(seconds: float) -> int:
    return math.ceil(seconds * 1000)


class RedisStreamStorage(StreamStorage):
    """Streams in Redis (6.2 or later; tested on 7.0).

    ``url``: ``redis://[:password@]host:port/db`` or ``rediss://`` (TLS), as redis-py
    takes it; or pass ``client`` (a `redis.asyncio.Redis` made with
    ``decode_responses=False``; it is not closed here). ``prefix``: the start of every
    key. ``flush_interval``: the default batching window (a crash of the writing process
    loses at most this much). ``block``: seconds one blocking read waits before it is
    issued again (at most half the client's ``socket_timeout``). ``cache_chunks``:
    chunks per watched stream kept from the blocking reads, so that subscribers' reads
    need no round trip.
    """

    shared = True

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Redis | None = None,
        prefix: str = "sg",
        flush_interval: float = 0.02,
        block: float = 10.0,
        cache_chunks: int = 4096,
    ) -> None:
        if (url is None) == (client is None):
            raise ValueError("pass either a Redis URL or a client, not both")
        if block <= 0 or cache_chunks < 1:
            raise ValueError("block must be positive and cache_chunks at least 1")
        self.url = url
        self.prefix = check_prefix(prefix)
        self.flush_interval = flush_interval
        self.block = block
        self.cache_chunks = cache_chunks
        self._given = client
        self._client: Redis | None = None
        self._caches: dict[str, BatchCache] = {}
        self._loads: Coalescer[StreamRecord | None] = Coalescer()
        self._reads: Coalescer[list[bytes]] = Coalescer()
        self._closed = False
        self._registered: dict[str, AsyncScript] = {}

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Make the client (no connection yet: the first command connects)."""
        if self._client is not None or self._closed:
            raise RuntimeError("RedisStreamStorage.start() may be called once")
        if self._given is not None:
            self._client = self._given
        else:
            assert self.url is not None
            # No retries inside redis-py: the manager retries `UnavailableError` with
            # its own backoff and deadline, and every call here is idempotent.
            self._client = Redis.from_url(
                self.url, decode_responses=False, retry=Retry(NoBackoff(), 0)
            )
        # EVALSHA, loading the script again when a restarted server forgot it.
        self._registered = {
            name: self._client.register_script(getattr(_scripts, name)) for name in _SCRIPT_NAMES
        }

    async def close(self) -> None:
        """Close the client unless it was given. The storage cannot be restarted."""
        self._closed = True
        client, self._client = self._client, None
        if client is not None and self._given is None:
            await client.aclose()

    @property
    def client(self) -> Redis:
        """The redis-py client; raises if the storage was not started."""
        if self._client is None:
            state = "closed" if self._closed else "not started (a StreamManager starts it)"
            raise RuntimeError(f"RedisStreamStorage is {state}")
        return self._client

    def _script(self, name: str) -> AsyncScript:
        self.client  # noqa: B018 - fail here if not started or closed
        return self._registered[name]

    def _keys(self, stream_id: str) -> list[str]:
        return [meta_key(self.prefix, stream_id), log_key(self.prefix, stream_id)]

    # -- the contract ------------------------------------------------------------------

    async def create(self, record: StreamRecord) -> None:
        fields = encode_record(record)
        args: list[Any] = [_ms(record.expires_at), fields["created_at"], fields["flow"]]
        for name, value in fields.items():
            args += [name, value]
        with _translated():
            await self._script("CREATE")(keys=self._keys(record.stream_id), args=args)
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.zadd(expiry_key(self.prefix), {record.stream_id: record.expires_at})
                pipe.zadd(created_key(self.prefix), {record.stream_id: record.created_at})
                await pipe.execute()

    async def append(self, stream_id: str, offset: int, chunks: Sequence[bytes]) -> None:
        if not chunks:
            return
        for chunk in chunks:
            if b"\n" in chunk:
                raise InvalidArgumentError("a chunk contains a raw newline: not compact JSON")
        with _translated():
            await self._script("APPEND")(keys=self._keys(stream_id), args=[offset, *chunks])

    async def finish(
        self, stream_id: str, length: int, terminal: Terminal, *, now: float, expires_at: float
    ) -> None:
        args = [terminal.kind, terminal.payload, length, repr(now), repr(expires_at)]
        with _translated():
            await self._script("FINISH")(keys=self._keys(stream_id), args=[*args, _ms(expires_at)])
            await self.client.zadd(expiry_key(self.prefix), {stream_id: expires_at})

    async def abandon(
        self, stream_id: str, terminal: Terminal, *, now: float, expires_at: float
    ) -> bool:
        args = [terminal.kind, terminal.payload, repr(now), repr(expires_at), _ms(expires_at)]
        with _translated():
            recorded = await self._script("ABANDON")(keys=self._keys(stream_id), args=args)
            if recorded:
                await self.client.zadd(expiry_key(self.prefix), {stream_id: expires_at})
        return bool(recorded)

    async def load(self, stream_id: str) -> StreamRecord | None:
        # Subscribers of one stream wake together and all load: one HGETALL serves them.
        record = await self._loads.run(stream_id, lambda: self._load(stream_id))
        cache = self._caches.get(stream_id)
        if cache is not None and record is not None:
            cache.loaded_length = max(cache.loaded_length, record.length)
        return record

    async def _load(self, stream_id: str) -> StreamRecord | None:
        key = meta_key(self.prefix, stream_id)
        with _translated():
            fields = await cast("Awaitable[dict[Any, Any]]", self.client.hgetall(key))
        return decode_record(stream_id, fields)

    async def read(self, stream_id: str, offset: int, limit: int) -> list[bytes]:
        """As the contract says, with one shortcut for a stream this process watches: at
        the end of what the blocking read received, with no `load` having seen more,
        the answer is ``[]`` without a round trip. (The manager loads after every empty
        read, and re-reads when the record is longer.)"""
        cache = self._caches.get(stream_id)
        if cache is not None:
            held = cache.read(offset, limit)
            if held or cache.is_current_at(offset):
                return held
        key = f"{stream_id}:{offset}:{limit}"
        return await self._reads.run(key, lambda: self._read_stored(stream_id, offset, limit))

    async def _read_stored(self, stream_id: str, offset: int, limit: int) -> list[bytes]:
        with _translated():
            reply = await self._script("READ")(
                keys=[log_key(self.prefix, stream_id)], args=[offset, limit]
            )
        chunks: list[bytes] = []
        for entry_id, data in zip(reply[::2], reply[1::2], strict=True):
            first, count = parse_entry_id(entry_id)
            batch = data.split(b"\n")
            if len(batch) != count:
                raise InternalError(f"stream {stream_id}: batch {first} holds {len(batch)} chunks")
            chunks.extend(batch[max(offset - first, 0) :])
        return chunks[:limit]

    async def compact(self, stream_id: str, length: int, entries: Sequence[bytes]) -> bool:
        """One script, atomic: the check, the new log and the mark (see `_scripts`).
        The batches this process's watch holds of the stream are dropped."""
        if not 1 <= len(entries) <= length:
            raise InvalidArgumentError("a compaction stores between 1 and `length` entries")
        if any(b"\n" in entry for entry in entries):
            raise InvalidArgumentError("a compacted entry contains a raw newline")
        args: list[int | bytes] = [length, len(entries), b"\n".join(entries)]
        with _translated():
            done = await self._script("COMPACT")(keys=self._keys(stream_id), args=args)
        if done:
            self._caches.pop(stream_id, None)
        return bool(done)

    async def renew(
        self, stream_ids: Sequence[str], lease_until: float, expires_at: float
    ) -> set[str]:
        ids = sorted(set(stream_ids))
        if not ids:
            return set()
        args = (repr(lease_until), repr(expires_at), _ms(expires_at))
        with _translated():
            # EVAL, not EVALSHA: a pipeline cannot load a script a restarted server
            # forgot, and renewals are rare (one round every lease / 3).
            async with self.client.pipeline(transaction=False) as pipe:
                for sid in ids:
                    pipe.eval(_scripts.RENEW, 2, *self._keys(sid), *args)
                results = await pipe.execute()
            renewed = {sid: expires_at for sid, r in zip(ids, results, strict=True) if r >= 0}
            if renewed:
                await self.client.zadd(expiry_key(self.prefix), dict(renewed))
        # 1: cancellation requested; -1: finished elsewhere (abandoned) or gone.
        return {sid for sid, r in zip(ids, results, strict=True) if r != 0}

    async def request_cancel(self, stream_id: str) -> bool:
        with _translated():
            return bool(await self._script("CANCEL")(keys=[meta_key(self.prefix, stream_id)]))

    async def request_stop(self, stream_id: str) -> bool:
        with _translated():
            return bool(await self._script("STOP")(keys=[meta_key(self.prefix, stream_id)]))

    async def purge(self, now: float) -> int:
        index = expiry_key(self.prefix)
        total = 0
        with _translated():
            while True:
                found = await self.client.zrangebyscore(
                    index, "-inf", now, start=0, num=_PURGE_ROUND
                )
                ids = [raw.decode() if isinstance(raw, bytes) else str(raw) for raw in found]
                if not ids:
                    return total
                async with self.client.pipeline(transaction=False) as pipe:
                    for sid in ids:
                        pipe.eval(_scripts.PURGE, 2, *self._keys(sid), repr(now))
                    results = await pipe.execute()
                gone = [sid for sid, r in zip(ids, results, strict=True) if r == 1]
                if gone:
                    await self.client.zrem(index, *gone)
                    await self.client.zrem(created_key(self.prefix), *gone)
                total += len(gone)
                if len(ids) < _PURGE_ROUND:
                    return total

    async def list_streams(self, selection: StreamFilter) -> StreamPage:
        """Walks the creation index (a sorted set) down from the cursor; see the module
        docstring. Streams created before the index existed (an older release) are not
        listed; those Redis expired by itself leave the index here."""
        index = created_key(self.prefix)
        top: float | str = "+inf" if selection.after is None else selection.after[0]
        scanned: list[StreamRecord] = []
        seen: set[str] = set()
        start = 0
        wanted = selection.limit + 1
        with _translated():
            while len(scanned) < _LIST_SCAN:
                step = min(max(wanted * 2, 64), _LIST_SCAN - len(scanned))
                found = await self.client.zrevrangebyscore(
                    index, top, "-inf", start=start, num=step
                )
                start += len(found)
                ids = [raw.decode() if isinstance(raw, bytes) else str(raw) for raw in found]
                ids = [sid for sid in ids if sid not in seen]  # a concurrent create shifts
                seen.update(ids)
                async with self.client.pipeline(transaction=False) as pipe:
                    for sid in ids:
                        pipe.hgetall(meta_key(self.prefix, sid))
                    hashes = await pipe.execute() if ids else []
                gone = [sid for sid, raw in zip(ids, hashes, strict=True) if not raw]
                if gone:
                    await self.client.zrem(index, *gone)
                    start -= len(gone)
                for sid, raw in zip(ids, hashes, strict=True):
                    record = decode_record(sid, raw)
                    if record is not None and selection.follows(record):
                        scanned.append(record)
                if len(found) < step:
                    return scanned_page(selection, scanned, exhausted=True)
                if sum(1 for r in scanned if selection.matches(r)) >= wanted:
                    break
        return scanned_page(selection, scanned, exhausted=False)

    def _block_for(self, client: Redis) -> float:
        """How long one blocking read may wait: ``block``, but at most half the
        client's socket timeout (redis-py's is 5 s by default), which would otherwise
        cut every quiet wait short with a timeout error."""
        timeout = client.connection_pool.connection_kwargs.get("socket_timeout")
        if isinstance(timeout, int | float) and timeout > 0:
            return min(self.block, timeout / 2)
        return self.block

    def watch(self, stream_id: str) -> AsyncIterator[None]:
        """Yield once in place, then whenever the stream's log gets an entry (a batch or
        the terminal), by ``XREAD BLOCK`` from the last entry seen."""
        self.client  # noqa: B018 - fail here if not started
        return self._watch(stream_id, log_key(self.prefix, stream_id))

    async def _watch(self, stream_id: str, log: str) -> AsyncIterator[None]:
        block_ms = _ms(self._block_for(self.client))
        with _translated():
            top = await self.client.xrevrange(log, count=1)
        last: bytes | str = "0-0"
        end = 0
        if top:
            last = top[0][0] or "0-0"
            first, count = parse_entry_id(last)
            end = first + count if b"d" in (top[0][1] or {}) else first
        cache = self._caches[stream_id] = BatchCache(self.cache_chunks, end)
        try:
            yield
            while True:
                with _translated():
                    reply = await self.client.xread({log: last}, count=256, block=block_ms)
                entries = _entries(reply)
                if not entries:
                    continue  # the block timed out: read again
                for entry_id, fields in entries:
                    data = fields.get(b"d")
                    if data is not None:
                        cache.add(parse_entry_id(entry_id)[0], data.split(b"\n"))
                    elif b"c" in fields and self._caches.get(stream_id) is cache:
                        # Compacted elsewhere: the batches held are gone from Redis.
                        del self._caches[stream_id]
                last = entries[-1][0]
                yield
        finally:
            if self._caches.get(stream_id) is cache:
                del self._caches[stream_id]


def _entries(reply: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """The entries of an ``XREAD`` reply on one key, in RESP2 or RESP3 shape."""
    if not reply:
        return []
    if isinstance(reply, dict):  # RESP3: {key: [[entries]]}
        return [entry for group in reply.values() for part in group for entry in part]
    return list(reply[0][1])  # RESP2: [[key, [entries]]]
