"""Calling Firestore for the durable store: bounded time, retried transactions, and
Google's failures as `DurableStoreError` (which the engine answers with "replay later").
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import anyio
from google.api_core import exceptions as gexc
from google.cloud.firestore_v1 import AsyncClient, AsyncTransaction

from stream_gateway.durable import DurableStoreError

__all__ = ["in_transaction", "store_errors"]

logger = logging.getLogger("stream_gateway_firestore.durable")

T = TypeVar("T")

#: Failures a later attempt may not meet: the backend is down, slow or contended.
_TRANSIENT: tuple[type[BaseException], ...] = (
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
    gexc.Aborted,
    gexc.Cancelled,
    gexc.InternalServerError,
    gexc.ResourceExhausted,
    gexc.RetryError,
    gexc.Unknown,
    ConnectionError,
    TimeoutError,
)

#: Attempts of one transaction that keeps meeting contention (``Aborted``).
TRANSACTION_ATTEMPTS = 20


@contextmanager
def store_errors(action: str) -> Iterator[None]:
    """Re-raise Google failures as `DurableStoreError` (transient unless a retry
    cannot help, such as a denied permission or an invalid request). The message
    names ``action`` only; the backend's text stays in ``__cause__`` and the log."""
    try:
        yield
    except asyncio.CancelledError as exc:
        # gRPC raises asyncio's CancelledError for an RPC the channel or server
        # cancelled. Let it through only when this task is really being cancelled:
        # otherwise a task group would take it for one and drop that task silently.
        # anyio's own cancellations carry a message ("Cancelled via cancel scope ...").
        task = asyncio.current_task()
        if task is None or task.cancelling() or exc.args:
            raise
        logger.info("Firestore cancelled %s: %s", action, exc)
        raise DurableStoreError(f"the durable store is unavailable ({action})") from exc
    except _TRANSIENT as exc:
        logger.info("Firestore unavailable (%s): %s", action, exc)
        raise DurableStoreError(f"the durable store is unavailable ({action})") from exc
    except gexc.GoogleAPICallError as exc:
        if not isinstance(exc, gexc.FailedPrecondition):  # a lost race: callers retry
            logger.warning("Firestore refused %s: %s", action, exc)
        raise DurableStoreError(f"the durable store refused {action}", transient=False) from exc


async def _attempt(
    transaction: Any, body: Callable[[AsyncTransaction], Awaitable[T]], retry_id: Any
) -> T:
    # Google's ``async_transactional`` retries only commits and turns a failed
    # rollback (say, after a begin that never answered) into a ValueError that hides
    # the real failure; this runs one attempt and leaves the retrying to the caller.
    await transaction._begin(retry_id=retry_id)
    transaction.began = transaction._id  # the id is cleared on rollback
    try:
        result = await body(transaction)
        await transaction._commit()
    except BaseException:
        if transaction.in_progress:
            with anyio.move_on_after(2, shield=True):
                try:
                    await transaction._rollback()
                except Exception:  # the server drops it anyway when it expires
                    pass
        raise
    return result


async def in_transaction(
    client: AsyncClient,
    action: str,
    body: Callable[[AsyncTransaction], Awaitable[T]],
    *,
    attempt_timeout: float,
) -> T:
    """Run ``body`` in a read-write transaction, again while it meets contention.

    ``body`` must read before it writes and may run several times (keep its effects
    in the transaction). Each attempt is bounded by ``attempt_timeout`` seconds; a timeout
    or an unreachable backend is a transient `DurableStoreError`, after which the
    writes may or may not have been committed.
    """
    retry_id: Any = None
    for attempt in range(TRANSACTION_ATTEMPTS):
        transaction: Any = client.transaction()
        try:
            with store_errors(action), anyio.fail_after(attempt_timeout):
                return await _attempt(transaction, body, retry_id)
        except DurableStoreError as exc:
            # A retry names the failed transaction: it keeps its place in line.
            retry_id = getattr(transaction, "began", None) or retry_id
            if not isinstance(exc.__cause__, gexc.Aborted) or attempt == TRANSACTION_ATTEMPTS - 1:
                raise
        # Contended: back off a little, at random, so the contenders spread out.
        await anyio.sleep(random.uniform(0, 0.05 * 2 ** min(attempt, 4)))
    raise AssertionError("unreachable")
