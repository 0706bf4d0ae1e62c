"""What every part of `FirestoreDurableStore` shares: clients, collections, bounded
calls, transactions, sequence counters."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from google.cloud.firestore_v1 import (
    AsyncClient,
    AsyncCollectionReference,
    AsyncDocumentReference,
    AsyncQuery,
    AsyncTransaction,
    Client,
)
from google.cloud.firestore_v1.base_document import DocumentSnapshot

from stream_gateway.durable import (
    AuditEntry,
    DurableStore,
    ExecutionNotFoundError,
    ExecutionRecord,
    Lease,
    LeaseLostError,
)

from ._durable_calls import in_transaction, store_errors
from ._durable_docs import audit_fields, record_fields, record_from_fields

__all__ = ["FINISHED", "LEASED", "FirestoreBase", "doc_id", "fields_of", "held"]

T = TypeVar("T")

_PREFIX = re.compile(r"[A-Za-z0-9_-]{1,80}")
FINISHED = ("completed", "failed", "cancelled")
LEASED = ("running", "rolling_back")


def doc_id(item_id: str) -> str:
    """``item_id`` as a document id: Firestore reserves ``__x__``, so such ids get a
    ``~`` in front (ids are otherwise ``[A-Za-z0-9_-]``, already safe)."""
    return "~" + item_id if item_id.startswith("__") and item_id.endswith("__") else item_id


def fields_of(snap: DocumentSnapshot[Any]) -> dict[str, Any]:
    return snap.to_dict() or {}


def held(fields: dict[str, Any], lease: Lease) -> bool:
    return (
        fields.get("status") in LEASED
        and fields.get("lease_owner") == lease.worker
        and fields.get("lease_token") == lease.token
    )


class FirestoreBase(DurableStore):
    """The plumbing of `FirestoreDurableStore` (its docstring says the options)."""

    def __init__(
        self,
        client: AsyncClient | None = None,
        *,
        project: str | None = None,
        prefix: str = "durable",
        watch_client: Client | None = None,
        rpc_timeout: float = 10.0,
    ) -> None:
        if not _PREFIX.fullmatch(prefix):
            raise ValueError("prefix must be 1-80 characters of A-Z, a-z, 0-9, '_' or '-'")
        self.prefix = prefix
        self.rpc_timeout = rpc_timeout
        self._project = project
        self._client = client
        self._watch_client = watch_client
        self._owned: list[AsyncClient | Client] = []
        # Journal order within a lease: (execution, token) -> next number.
        self._order: dict[tuple[str, int], int] = {}
        self._last_stamp = 0

    # -- plumbing ------------------------------------------------------------------

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

    def _collection(self, name: str) -> AsyncCollectionReference:
        collection: AsyncCollectionReference = self.client.collection(f"{self.prefix}_{name}")
        return collection

    def _execution(self, execution_id: str) -> AsyncDocumentReference:
        return self._collection("executions").document(doc_id(execution_id))

    def _counter(self, name: str) -> AsyncDocumentReference:
        return self._collection("meta").document(name)

    async def _call(self, action: str, call: Awaitable[T]) -> T:
        with store_errors(action), anyio.fail_after(self.rpc_timeout):
            return await call

    async def _transact(self, action: str, body: Any) -> Any:
        return await in_transaction(self.client, action, body, attempt_timeout=self.rpc_timeout)

    async def _snap(
        self, ref: AsyncDocumentReference, txn: AsyncTransaction
    ) -> DocumentSnapshot[Any]:
        snap: DocumentSnapshot[Any] = await ref.get(transaction=txn, retry=None)
        return snap

    async def _query(self, query: AsyncQuery, txn: AsyncTransaction | None = None) -> list[Any]:
        if txn is None:
            return list(await query.get(retry=None, timeout=self.rpc_timeout))
        return list(await query.get(transaction=txn, retry=None))

    async def _get_all(
        self, refs: Sequence[AsyncDocumentReference], txn: AsyncTransaction | None = None
    ) -> list[DocumentSnapshot[Any]]:
        if not refs:
            return []
        options: dict[str, Any] = {"retry": None}
        if txn is not None:
            options["transaction"] = txn
        else:
            options["timeout"] = self.rpc_timeout
        return [snap async for snap in self.client.get_all(list(refs), **options)]

    async def _existing(self, execution_id: str, txn: AsyncTransaction) -> dict[str, Any]:
        snap = await self._snap(self._execution(execution_id), txn)
        if not snap.exists:
            raise ExecutionNotFoundError("flow not found")
        return fields_of(snap)

    async def _fence(self, lease: Lease, txn: AsyncTransaction) -> dict[str, Any]:
        snap = await self._snap(self._execution(lease.execution_id), txn)
        fields = fields_of(snap)
        if not snap.exists or not held(fields, lease):
            raise LeaseLostError(f"lease on flow {lease.execution_id} was lost")
        return fields

    async def _reserve(self, txn: AsyncTransaction, name: str, count: int) -> int:
        """Read counter ``name`` (a read: before any write of ``txn``); returns the first
        of ``count`` numbers. The caller writes it on (`_advance`, `_put_audit`)."""
        if count == 0:
            return 0
        return int(fields_of(await self._snap(self._counter(name), txn)).get("next", 1))

    def _advance(self, txn: AsyncTransaction, name: str, first: int, count: int) -> None:
        if count:
            txn.set(self._counter(name), {"next": first + count})

    def _put_audit(self, txn: AsyncTransaction, entries: Sequence[AuditEntry]) -> None:
        """Write ``entries`` as audit lines not numbered yet (`_sequence` numbers them).

        Numbering in the writing transaction would make one counter document part of
        every audited write: every worker's transactions would queue on it. ``order``
        (this process's clock, never going back, then the position) keeps a writer's
        lines in the order it wrote them.
        """
        stamp = max(time.time_ns(), self._last_stamp + 1)
        self._last_stamp = stamp
        audit = self._collection("audit")
        for position, entry in enumerate(entries):
            order = f"{stamp:020d}.{position:05d}"
            txn.set(audit.document(uuid.uuid4().hex), audit_fields(entry, None, order))

    def _next_order(self, lease: Lease) -> int:
        # A new lease's token is larger than every earlier one, so entries first
        # written under it sort after all earlier entries without a shared counter.
        key = (lease.execution_id, lease.token)
        number = self._order.get(key, 0)
        self._order[key] = number + 1
        return (lease.token << 32) | number

    def _forget_lease(self, lease: Lease) -> None:
        self._order.pop((lease.execution_id, lease.token), None)

    async def _plan_create(
        self, txn: AsyncTransaction, record: ExecutionRecord
    ) -> tuple[ExecutionRecord, bool]:
        """The reads of a create: the stored record if the id exists, else ``record``
        numbered by the creation counter (written by `_apply_create`)."""
        snap = await self._snap(self._execution(record.id), txn)
        if snap.exists:
            return record_from_fields(record.id, fields_of(snap)), False
        seq = await self._reserve(txn, "executions", 1)
        stored = ExecutionRecord(
            id=record.id,
            flow=record.flow,
            input=record.input,
            status=record.status,
            owner=record.owner,
            created_at=record.created_at,
            updated_at=record.updated_at,
            due_at=record.due_at,
            seq=seq,
            parent=record.parent,
        )
        return stored, True

    def _apply_create(self, txn: AsyncTransaction, planned: tuple[ExecutionRecord, bool]) -> None:
        stored, new = planned
        if new:
            self._advance(txn, "executions", stored.seq, 1)
            txn.set(
                self._execution(stored.id),
                {**record_fields(stored), "id": stored.id, "signal_next": 1},
            )
