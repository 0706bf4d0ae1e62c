"""How the durable store talks to PostgreSQL: a pool, transactions, retries, errors.

Every call becomes a `DurableStoreError` when the server is away (transient: the
engine replays the run later, never fails the execution) or refuses a privilege
(not transient). A call that failed before anything could have committed (the pool
handed out a connection the server had closed, the server was restarting, a
deadlock was broken) is tried again, a few times with a short backoff; a write
whose COMMIT was sent but not answered is not, as it may have landed: the engine's
replay reads the journal back and carries on from what is there.

The durable functions (migration 3) raise two SQLSTATEs of their own, turned here into
the contract's errors: `LEASE_LOST` into `LeaseLostError`, `REFUSED` into ``ValueError``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal, TypeVar

import anyio
import asyncpg
from asyncpg import exceptions as pgexc

from stream_gateway.durable import DurableStoreError, LeaseLostError

from ._durable_layout import LEASE_LOST, REFUSED
from ._errors import is_transient
from ._migrations import Connection

__all__ = ["Database", "store_errors"]

logger = logging.getLogger("stream_gateway_postgres")
T = TypeVar("T")


@contextmanager
def store_errors(what: str) -> Iterator[None]:
    """Re-raise asyncpg's failures while doing ``what`` as `DurableStoreError`."""
    try:
        yield
    except pgexc.PostgresError as exc:
        if exc.sqlstate == LEASE_LOST:
            raise LeaseLostError(exc.args[0] if exc.args else str(exc)) from None
        if exc.sqlstate == REFUSED:
            raise ValueError(exc.args[0] if exc.args else str(exc)) from None
        if isinstance(exc, pgexc.InsufficientPrivilegeError):
            raise DurableStoreError(f"PostgreSQL refused {what}: {exc}", transient=False) from exc
        if not is_transient(exc):
            raise
        logger.warning("durable store: %s failed: %s: %s", what, type(exc).__name__, exc)
        raise DurableStoreError(f"PostgreSQL unavailable while {what}") from exc
    except Exception as exc:
        if not is_transient(exc):
            raise
        logger.warning("durable store: %s failed: %s: %s", what, type(exc).__name__, exc)
        raise DurableStoreError(f"PostgreSQL unavailable while {what}") from exc


class Database:
    """A pool on ``dsn``; `read` and `write` run a body on one of its connections."""

    def __init__(
        self,
        dsn: str,
        *,
        max_connections: int,
        command_timeout: float,
        retries: int,
        options: Mapping[str, Any],
        prepare: Callable[[Connection], Awaitable[Any]],
    ) -> None:
        self.dsn = dsn
        self.max_connections = max_connections
        self.command_timeout = command_timeout
        self.retries = retries
        self.options = dict(options)
        self.pool: asyncpg.Pool | None = None
        self._prepare = prepare
        self._opening = anyio.Lock()

    async def open(self) -> None:
        """Create the pool and run ``prepare`` (migrations) on one connection; once."""
        async with self._opening:
            if self.pool is None:
                self.pool = await self._open()

    async def _open(self) -> asyncpg.Pool:
        with store_errors("connecting"):
            pool = await asyncpg.create_pool(
                self.dsn,
                min_size=0,  # no connection kept (and retried in the background) while down
                max_size=self.max_connections,
                command_timeout=self.command_timeout,
                timeout=self.command_timeout,
                **{"reset": _keep_session, **self.options},
            )
        try:
            with store_errors("migrating the durable tables"):
                async with pool.acquire(timeout=self.command_timeout) as conn:
                    await self._prepare(conn)
        except BaseException:
            pool.terminate()
            raise
        return pool

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):
            pool, self.pool = self.pool, None
            if pool is None:
                return
            with anyio.move_on_after(self.command_timeout) as waited:
                try:
                    await pool.close()
                except Exception as exc:  # connections the server already dropped
                    logger.debug("closing the pool: %r", exc)
                    pool.terminate()
            if waited.cancelled_caught:
                pool.terminate()

    async def read(self, what: str, body: Callable[[Connection], Awaitable[T]]) -> T:
        """``body(conn)`` outside a transaction (each statement sees what is committed)."""
        return await self._run(what, body, mode="read")

    async def write(self, what: str, body: Callable[[Connection], Awaitable[T]]) -> T:
        """``body(conn)`` in one transaction: all of it commits, or nothing."""
        return await self._run(what, body, mode="transaction")

    async def statement(self, what: str, body: Callable[[Connection], Awaitable[T]]) -> T:
        """``body(conn)``, which runs one statement: a transaction of its own, and one
        round trip where `write` takes at least three (BEGIN, the body, COMMIT)."""
        return await self._run(what, body, mode="statement")

    async def _run(
        self,
        what: str,
        body: Callable[[Connection], Awaitable[T]],
        *,
        mode: Literal["read", "transaction", "statement"],
    ) -> T:
        for attempt in range(self.retries + 1):
            committing = False
            try:
                if self.pool is None:
                    await self.open()  # the first call opens the store, as SQLite's does
                pool = self.pool
                assert pool is not None
                with store_errors(what):
                    async with pool.acquire(timeout=self.command_timeout) as conn:
                        if mode == "read":
                            return await body(conn)
                        if mode == "statement":
                            committing = True  # it commits as it ends
                            return await body(conn)
                        async with conn.transaction():
                            value = await body(conn)
                            committing = True  # what fails from here on may have landed
                        return value
            except DurableStoreError as exc:
                if not exc.transient or attempt == self.retries:
                    raise
                if committing and not _rolled_back(exc):
                    raise
            await anyio.sleep(0.05 * 2**attempt)
        raise AssertionError("unreachable")  # pragma: no cover


def _rolled_back(exc: DurableStoreError) -> bool:
    """Whether the failed write cannot have committed, so that it can be tried again:
    asyncpg refused to send it (a pooled connection the server had closed, which
    asyncpg had not noticed yet), or the server said it rolled it back (a deadlock
    broken, a serialization failure, a standby). A connection lost or a server shut
    down while it ran leaves that unknown, as does a timeout."""
    cause = exc.__cause__
    if isinstance(cause, pgexc.InternalClientError | asyncpg.InterfaceError):
        return True  # raised before anything is sent (`is_transient` picked the kinds)
    return isinstance(cause, pgexc.PostgresError) and not isinstance(
        cause, pgexc.PostgresConnectionError | pgexc.OperatorInterventionError
    )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset on release, in place of asyncpg's (a round trip that clears
    session state: settings, LISTENs, advisory locks, cursors). The durable store
    leaves none on its pooled connections (LISTEN has a connection of its own, its
    advisory locks end with their transactions), and asyncpg still rolls back a
    transaction left open before calling this."""
    del conn
