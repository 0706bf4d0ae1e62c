"""`FirestoreStreamStorage`: streams as a record document plus chunk-batch documents."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from google.api_core import exceptions as gexc
from google.cloud.firestore_v1 import (
    AsyncClient,
    AsyncCollectionReference,
    AsyncDocumentReference,
    AsyncQuery,
    Client,
    Query,
)
from google.cloud.firestore_v1.base_query import FieldFilter

from stream_gateway import StreamExistsError, StreamNotFoundError, UnavailableError
from stream_gateway.streams import (
    StreamFilter,
    StreamPage,
    StreamRecord,
    StreamStorage,
    Terminal,
)

from ._compaction import compact_stream
from ._google import from_timestamp, to_timestamp, translated
from ._layout import (
    BATCHES,
    batch_id,
    check_stream_id,
    commit_groups,
    plan_batches,
    record_fields,
    record_from_fields,
    terminal_fields,
)
from ._leases import finish_open, flag_cancel, renew_leases
from ._maintenance import delete_expired, restamp_batches
from ._reads import last_end, read_chunks
from ._watch import listen

__all__ = ["FirestoreStreamStorage"]

_COLLECTION = re.compile(r"[A-Za-z0-9_-]{1,100}")


@dataclass(slots=True)
class _Local:
    """What this process knows of a stream it writes (one writer per stream)."""

    length: int = 0
    expires_at: float | None = None  # the record's, as last written here
    batch_expiry: float | None = None  # the earliest ``expires_at`` on a batch written here
    split: tuple[int, list[int]] | None = None  # offset and batch sizes of a failed append


class FirestoreStreamStorage(StreamStorage):
    """Streams in Cloud Firestore: one record document, chunks in batch documents.

    ``{collection}/{id}`` holds the record; ``{collection}/{id}/batches/{offset}`` holds
    each flushed batch (split below 1 MiB), so a resume reads only the batches it
    needs and no document is written more than once per flush, whatever the token
    rate. The record is written on create, on lease renewals (every third of a lease,
    which also refreshes its ``length``) and on finish; in between, `load` derives the
    length from the last batch. Changes from other processes arrive through one
    snapshot listener pair (record and newest batch) per watched stream.

    ``client`` is an `AsyncClient` (made from ``project`` and the environment when
    omitted, and then closed with the storage); ``watch_client`` the synchronous client
    used to listen (derived from ``client`` when omitted). Batch documents carry
    ``expires_at`` set ``batch_expiry_margin`` seconds past the stream's, re-stamped
    if a stream outlives it, so a TTL policy can delete them too. ``rpc_timeout``
    bounds every call; a timeout counts as unavailable.
    """

    shared = True

    def __init__(
        self,
        client: AsyncClient | None = None,
        *,
        project: str | None = None,
        collection: str = "streams",
        flush_interval: float = 0.1,
        watch_client: Client | None = None,
        batch_expiry_margin: float = 86400.0,
        rpc_timeout: float = 10.0,
    ) -> None:
        if not _COLLECTION.fullmatch(collection):
            raise ValueError("collection must be 1-100 characters of A-Z, a-z, 0-9, '_' or '-'")
        self.flush_interval = flush_interval
        self.collection = collection
        self.batch_expiry_margin = batch_expiry_margin
        self.rpc_timeout = rpc_timeout
        self._project = project
        self._client = client
        self._watch_client = watch_client
        self._owned: list[AsyncClient | Client] = []
        self._local: dict[str, _Local] = {}
        self._create_tokens: dict[str, str] = {}

    @property
    def client(self) -> AsyncClient:
        """The async client every read and write goes through."""
        if self._client is None:
            self._client = AsyncClient(project=self._project)
            self._owned.append(self._client)
        return self._client

    async def start(self) -> None:
        self.client  # noqa: B018 - make the client in the event loop that will use it

    async def close(self) -> None:
        owned, self._owned = self._owned, []
        for made in owned:
            transport: Any = getattr(made, "_transport", None)
            if transport is None:
                continue  # never connected
            if isinstance(made, AsyncClient):
                await transport.close()
            else:
                await anyio.to_thread.run_sync(transport.close)
        if self._client in owned:
            self._client = None
        if self._watch_client in owned:
            self._watch_client = None

    # -- documents ---------------------------------------------------------------

    def _record(self, stream_id: str) -> AsyncDocumentReference:
        return self.client.collection(self.collection).document(check_stream_id(stream_id))

    def _batches(self, stream_id: str) -> AsyncCollectionReference:
        batches: AsyncCollectionReference = self._record(stream_id).collection(BATCHES)
        return batches

    # -- the contract ------------------------------------------------------------

    async def create(self, record: StreamRecord) -> None:
        ref = self._record(record.stream_id)
        # Kept across a retry, so that a create that landed but timed out knows itself.
        token = self._create_tokens.setdefault(record.stream_id, uuid.uuid4().hex)
        try:
            with translated("creating a stream"):
                await ref.create(record_fields(record, token), retry=None, timeout=self.rpc_timeout)
        except gexc.AlreadyExists:
            if not await self._created_with(ref, token):
                del self._create_tokens[record.stream_id]
                raise StreamExistsError(f"stream {record.stream_id} exists") from None
        except UnavailableError:
            raise
        except BaseException:
            del self._create_tokens[record.stream_id]
            raise
        del self._create_tokens[record.stream_id]
        self._local[record.stream_id] = _Local(record.length, record.expires_at)

    async def _created_with(self, ref: AsyncDocumentReference, token: str) -> bool:
        with translated("checking a stream"):
            snap = await ref.get(retry=None, timeout=self.rpc_timeout)
        return bool(snap.exists and (snap.to_dict() or {}).get("create_token") == token)

    async def append(self, stream_id: str, offset: int, chunks: Sequence[bytes]) -> None:
        if not chunks:
            return
        batches = self._batches(stream_id)
        local = self._local.setdefault(stream_id, _Local())
        counts = local.split[1] if local.split and local.split[0] == offset else ()
        plan = plan_batches(offset, list(chunks), counts)
        local.split = (offset, [len(batch.chunks) for batch in plan])
        expiry = (local.expires_at or time.time()) + self.batch_expiry_margin
        stamp = to_timestamp(expiry)
        for group in commit_groups(plan):
            with translated("appending chunks"):
                if len(group) == 1:
                    doc = batches.document(batch_id(group[0].offset))
                    await doc.set(group[0].fields(stamp), retry=None, timeout=self.rpc_timeout)
                    continue
                write = self.client.batch()
                for batch in group:
                    write.set(batches.document(batch_id(batch.offset)), batch.fields(stamp))
                await write.commit(retry=None, timeout=self.rpc_timeout)
        local.split = None
        local.length = offset + len(chunks)
        local.batch_expiry = min(expiry, local.batch_expiry or expiry)

    async def finish(
        self, stream_id: str, length: int, terminal: Terminal, *, now: float, expires_at: float
    ) -> None:
        ref = self._record(stream_id)
        local = self._local.get(stream_id)
        if local is not None:
            await self._restamp_if_needed(ref, local, expires_at)
        fields = {
            "status": terminal.kind,
            "terminal": terminal_fields(terminal),
            "length": length,
            "updated_at": to_timestamp(now),
            "expires_at": to_timestamp(expires_at),
            "lease_until": None,
        }
        # Only an open stream: an end recorded already (abandoned) stands.
        written = await finish_open(
            self.client, ref, lambda stored: fields, rpc_timeout=self.rpc_timeout
        )
        self._local.pop(stream_id, None)
        if written is None:
            raise StreamNotFoundError(
                "stream not found: its record was deleted (or lost) while it was written"
            )

    async def abandon(
        self, stream_id: str, terminal: Terminal, *, now: float, expires_at: float
    ) -> bool:
        batches = self._batches(stream_id)

        async def end_of(stored: dict[str, Any]) -> dict[str, Any] | None:
            lease = stored.get("lease_until")
            if lease is None or from_timestamp(lease) >= now:
                return None  # still leased (renewed meanwhile)
            committed = await last_end(batches, rpc_timeout=self.rpc_timeout)
            return {
                "status": terminal.kind,
                "terminal": terminal_fields(terminal),
                "length": max(int(stored.get("length") or 0), committed),
                "updated_at": to_timestamp(now),
                "expires_at": to_timestamp(expires_at),
                "lease_until": None,
            }

        written = await finish_open(
            self.client, self._record(stream_id), end_of, rpc_timeout=self.rpc_timeout
        )
        return bool(written)

    async def load(self, stream_id: str) -> StreamRecord | None:
        ref = self._record(stream_id)
        with translated("loading a stream"):
            snap = await ref.get(retry=None, timeout=self.rpc_timeout)
        if not snap.exists:
            return None
        record = record_from_fields(stream_id, snap.to_dict() or {})
        if record.status == "open":
            # The stored length is refreshed only on renewals: derive the exact one.
            record.length = max(record.length, await self._committed(stream_id))
        return record

    async def _committed(self, stream_id: str) -> int:
        """An open stream's committed length: as written here, else from its newest batch."""
        local = self._local.get(stream_id)
        if local is not None:
            return local.length
        return await last_end(self._batches(stream_id), rpc_timeout=self.rpc_timeout)

    async def read(self, stream_id: str, offset: int, limit: int) -> list[bytes]:
        return await read_chunks(
            self._batches(stream_id), offset, limit, rpc_timeout=self.rpc_timeout
        )

    async def compact(self, stream_id: str, length: int, entries: Sequence[bytes]) -> bool:
        """One batched write marks the record (``last_update_time`` precondition) and
        writes the entries as batch documents from offset 0; the old batches are then
        deleted, newest first. A process that dies in between leaves them to `purge`."""
        return await compact_stream(
            self.client,
            self._record(stream_id),
            length,
            list(entries),
            batch_expiry_margin=self.batch_expiry_margin,
            rpc_timeout=self.rpc_timeout,
        )

    async def renew(
        self, stream_ids: Sequence[str], lease_until: float, expires_at: float
    ) -> set[str]:
        records = [self._record(sid) for sid in dict.fromkeys(stream_ids)]
        if not records:
            return set()
        changes = {"lease_until": to_timestamp(lease_until), "expires_at": to_timestamp(expires_at)}
        for record in records:
            local = self._local.get(record.id)
            if local is not None:
                # Batches first, record second: no batch ever expires before its record,
                # and batches flushed meanwhile are stamped with the new expiry already.
                local.expires_at = expires_at
                await self._restamp_if_needed(record, local, expires_at)
        lengths = {sid: local.length for sid, local in self._local.items()}
        return await renew_leases(
            self.client, records, changes, lengths, rpc_timeout=self.rpc_timeout
        )

    async def request_cancel(self, stream_id: str) -> bool:
        return await flag_cancel(self.client, self._record(stream_id), rpc_timeout=self.rpc_timeout)

    async def request_stop(self, stream_id: str) -> bool:
        return await flag_cancel(
            self.client,
            self._record(stream_id),
            rpc_timeout=self.rpc_timeout,
            flag="stop_requested",
        )

    async def list_streams(self, selection: StreamFilter) -> StreamPage:
        """One query ordered by ``created_at`` then document id, both descending,
        starting after the cursor, with status, flow and owner as equality filters (on
        Firestore itself, a filtered listing needs the composite indexes the README
        lists). Open streams' lengths are completed from their newest batch, one small
        query each, as `load` does."""
        query: AsyncQuery = self.client.collection(self.collection)  # type: ignore[assignment]
        for name, value in (
            ("status", selection.status), ("flow", selection.flow), ("owner", selection.owner)
        ):  # fmt: skip
            if value is not None:
                query = query.where(filter=FieldFilter(name, "==", value))
        query = query.order_by("created_at", direction=Query.DESCENDING).order_by(
            "__name__", direction=Query.DESCENDING
        )
        if selection.after is not None:
            when, sid = selection.after
            query = query.start_after({"created_at": to_timestamp(when), "__name__": sid})
        query = query.limit(selection.limit + 1)
        with translated("listing streams"):
            snaps = [snap async for snap in query.stream(retry=None, timeout=self.rpc_timeout)]
        records = [record_from_fields(snap.id, snap.to_dict() or {}) for snap in snaps]
        for record in records[: selection.limit]:
            if record.status == "open":
                record.length = max(record.length, await self._committed(record.stream_id))
        return selection.page(records, more=False)

    async def purge(self, now: float) -> int:
        return await delete_expired(
            self.client, self.collection, to_timestamp(now), rpc_timeout=self.rpc_timeout
        )

    async def watch(self, stream_id: str) -> AsyncIterator[None]:
        check_stream_id(stream_id)
        client = await self._listening_client()
        record = client.collection(self.collection).document(stream_id)
        newest = record.collection(BATCHES).order_by("offset", direction=Query.DESCENDING).limit(1)
        async for _ in listen(record, newest):
            yield

    # -- helpers -------------------------------------------------------------------

    async def _listening_client(self) -> Client:
        if self._watch_client is None:
            source: Any = self.client
            self._watch_client = await anyio.to_thread.run_sync(
                lambda: Client(
                    project=source.project,
                    credentials=getattr(source, "_credentials", None),
                    database=getattr(source, "_database", None),
                )
            )
            self._owned.append(self._watch_client)
        return self._watch_client

    async def _restamp_if_needed(
        self, ref: AsyncDocumentReference, local: _Local, expires_at: float
    ) -> None:
        # Re-stamp once half the margin is used up, so batches always keep at least half
        # of it beyond their record (and never fall behind it).
        if local.batch_expiry is None or expires_at + self.batch_expiry_margin / 2 <= (
            local.batch_expiry
        ):
            return
        expiry = expires_at + self.batch_expiry_margin
        await restamp_batches(self.client, ref, to_timestamp(expiry), rpc_timeout=self.rpc_timeout)
        local.batch_expiry = expiry
