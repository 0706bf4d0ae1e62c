"""Change notifications: Firestore snapshot listeners, relayed from their threads.

Only Firestore's synchronous client can listen (``on_snapshot``); its listeners call
back on threads of their own. `listen` turns them into an async iterator that yields
once per burst of snapshots, without ever blocking the event loop.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
from google.api_core import exceptions as gexc
from google.cloud.firestore_v1.base_document import DocumentSnapshot
from google.cloud.firestore_v1.document import DocumentReference
from google.cloud.firestore_v1.query import Query
from google.cloud.firestore_v1.watch import Watch

from stream_gateway import UnavailableError

from ._google import translated

__all__ = ["listen", "listen_to"]


class _Relay:
    """Wakes one task in the event loop from any thread; bursts of pokes coalesce."""

    def __init__(self) -> None:
        self._token = anyio.lowlevel.current_token()
        self._lock = threading.Lock()
        self._pending = False
        self._event = anyio.Event()

    def poke(self, *_: object) -> None:
        """Called on a listener thread (never the event loop's)."""
        with self._lock:
            if self._pending:
                return  # a wake-up is already on its way
            self._pending = True
        try:
            anyio.from_thread.run_sync(self._wake, token=self._token)
        except RuntimeError:
            pass  # the event loop has finished: nobody is listening any more

    def _wake(self) -> None:
        with self._lock:
            self._pending = False
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()
        self._event = anyio.Event()


def _never(_exc: object) -> bool:
    return False


def _google_error(failure: object) -> BaseException:
    """A listener's failure as a Google API error where it came from gRPC."""
    if isinstance(failure, gexc.GoogleAPICallError):
        return failure
    convert: Any = gexc.from_grpc_error  # untyped in google-api-core
    if isinstance(failure, BaseException) and callable(getattr(failure, "code", None)):
        return cast(BaseException, convert(failure))
    return failure if isinstance(failure, BaseException) else RuntimeError(str(failure))


class _FailFastWatch(Watch):
    """Firestore's `Watch`, made to stop at its first failure and report it.

    The stock watch reopens its stream in a tight loop while the backend is
    unreachable (a whole core, per listener), and raises a fatal error on a thread
    of its own where nobody can catch it. This one records the failure, closes
    quietly and pokes the relay; `listen` then raises in the event loop, and
    `StreamManager` restarts the listener with backoff.
    """

    failure: BaseException | None = None

    def _init_stream(self) -> None:
        parent: Any = super()  # Watch is untyped
        parent._init_stream()
        rpc: Any = self._rpc
        if rpc is None:
            return
        rpc._should_recover = _never
        receive = rpc._recv

        def recv() -> Any:
            # Raise gRPC failures as Google API errors: the stream's consumer thread
            # then ends quietly instead of logging a traceback per failure.
            try:
                return receive()
            except Exception as exc:
                converted = _google_error(exc)
                if converted is exc:
                    raise
                raise converted from exc

        rpc._recv = recv

    def _on_rpc_done(self, future: object) -> None:
        if future is None:
            return  # our own unsubscribe
        self.failure = _google_error(future)
        callback = self._snapshot_callback
        threading.Thread(target=self.close, name="firestore-watch-close", daemon=True).start()
        if callback is not None:
            callback(None, [], None)


def _open(
    targets: Sequence[DocumentReference | Query], relay: _Relay, into: list[_FailFastWatch]
) -> None:
    # Appends as it goes, so that the caller closes whatever was opened, even when
    # it was cancelled meanwhile.
    factory: Any = _FailFastWatch  # Watch's constructors are untyped
    for target in targets:
        if isinstance(target, DocumentReference):
            into.append(factory.for_document(target, relay.poke, DocumentSnapshot))
        else:
            into.append(factory.for_query(target, relay.poke, DocumentSnapshot))


def _close(watches: list[_FailFastWatch]) -> None:
    for watch in watches:
        closer: Any = watch.close  # untyped
        closer()


def listen(doc: DocumentReference, batches: Query) -> AsyncIterator[None]:
    """Yield whenever ``doc`` or the result of ``batches`` may have changed.

    Yields once at the start (the listeners' first snapshots). Raises when a listener
    fails: `UnavailableError` for a transient failure, the original error otherwise.
    """
    return listen_to([doc, batches])


async def listen_to(targets: Sequence[DocumentReference | Query]) -> AsyncIterator[None]:
    """Yield whenever a document or query result of ``targets`` may have changed;
    as `listen`, with one listener per target."""
    relay = _Relay()
    watches: list[_FailFastWatch] = []
    try:
        await anyio.to_thread.run_sync(_open, targets, relay, watches)
        while True:
            await relay.wait()
            for watch in watches:
                if watch.failure is not None:
                    with translated("listening for changes"):
                        raise watch.failure
            if any(not watch.is_active for watch in watches):
                raise UnavailableError("Firestore listener stopped")
            yield
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(_close, watches)
