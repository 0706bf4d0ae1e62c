"""Fields the durable documents gained later: stored, and read as their default
from documents written before they existed (no migration)."""

from __future__ import annotations

import secrets

import pytest
from google.cloud.firestore_v1 import DELETE_FIELD

from stream_gateway.durable import ExecutionRecord, JournalEntry, Lease
from stream_gateway_firestore import FirestoreDurableStore
from stream_gateway_firestore.testing import FirestoreEmulator

pytestmark = pytest.mark.anyio

T0 = 1_000_000.0


async def test_documents_without_the_new_fields_read_as_defaults(
    emulator: FirestoreEmulator,
) -> None:
    prefix = f"f{secrets.token_hex(5)}"
    store = FirestoreDurableStore.from_url(f"firestore://{emulator.project}?prefix={prefix}")
    async with store:
        record = ExecutionRecord(
            id="fields-000000000001", flow="f", input="null", created_at=T0, updated_at=T0,
            due_at=T0,
        )  # fmt: skip
        await store.create(record)
        [claimed] = await store.claim("w", now=T0, lease_until=T0 + 10, limit=1, flows=["f"])
        lease = Lease(claimed.id, "w", claimed.lease_token)
        entry = JournalEntry(0, "step", "a", "completed", "1", started_at=T0, stream_at=7)
        await store.append(lease, entry, T0)
        assert await store.request_evict(record.id, T0)

        doc = store.client.collection(f"{prefix}_executions").document(record.id)
        [journal_doc] = [s async for s in doc.collection("journal").stream()]
        assert (await doc.get()).to_dict()["evict_requested"] is True  # type: ignore[index]
        assert journal_doc.to_dict()["stream_at"] == 7
        assert (await store.history(record.id)).entries[0].stream_at == 7

        await doc.update({"evict_requested": DELETE_FIELD})
        await journal_doc.reference.update({"stream_at": DELETE_FIELD})
        assert not (await store.get(record.id)).evict_requested
        assert (await store.history(record.id)).entries[0].stream_at is None
