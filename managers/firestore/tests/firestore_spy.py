"""Counts what one `AsyncClient` sends to Firestore, at the gRPC API boundary.

Every write (create, set, update, batched writes) goes through ``Commit`` and every
read through ``RunQuery`` or ``BatchGetDocuments``; wrapping those three calls sees
all traffic without depending on how the storage makes its calls.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from google.cloud.firestore_v1 import AsyncClient


@dataclass(frozen=True)
class Write:
    at: float  # time.monotonic() when sent
    path: str  # "streams/{id}" or "streams/{id}/batches/{offset}"
    kind: str  # "create", "set", "update" or "delete"
    fields: tuple[str, ...]  # the update mask of an update, else ()


class Spy:
    """Records the documents written and read through ``client``."""

    def __init__(self, client: AsyncClient) -> None:
        cl: Any = client
        api = cl._firestore_api
        self._prefix = f"{cl._database_string}/documents/"
        self.writes: list[Write] = []
        self.reads: list[str] = []  # paths of documents returned by queries and gets
        self.queries = 0
        commit, run_query, batch_get = api.commit, api.run_query, api.batch_get_documents

        async def spy_commit(*args: Any, **kwargs: Any) -> Any:
            request = kwargs.get("request", args[0] if args else None)
            assert request is not None, "Commit called without a request"
            now = time.monotonic()
            for write in request["writes"]:
                self.writes.append(self._describe(now, getattr(write, "_pb", write)))
            return await commit(*args, **kwargs)

        async def spy_run_query(*args: Any, **kwargs: Any) -> Any:
            self.queries += 1
            responses = await run_query(*args, **kwargs)
            return self._tap(responses, lambda r: r.document.name)

        async def spy_batch_get(*args: Any, **kwargs: Any) -> Any:
            responses = await batch_get(*args, **kwargs)
            return self._tap(responses, lambda r: r.found.name)

        api.commit, api.run_query, api.batch_get_documents = (
            spy_commit,
            spy_run_query,
            spy_batch_get,
        )

    async def _tap(self, responses: Any, name_of: Any) -> AsyncIterator[Any]:
        async for response in responses:
            name = name_of(response)
            if name:
                self.reads.append(name.removeprefix(self._prefix))
            yield response

    def _describe(self, at: float, pb: Any) -> Write:
        if pb.WhichOneof("operation") == "delete":
            return Write(at, pb.delete.removeprefix(self._prefix), "delete", ())
        path = pb.update.name.removeprefix(self._prefix)
        if pb.HasField("update_mask"):
            return Write(at, path, "update", tuple(pb.update_mask.field_paths))
        if pb.HasField("current_document") and pb.current_document.HasField("exists"):
            return Write(at, path, "create" if not pb.current_document.exists else "update", ())
        return Write(at, path, "set", ())

    def writes_to(self, path_part: str) -> list[Write]:
        return [w for w in self.writes if path_part in w.path]
