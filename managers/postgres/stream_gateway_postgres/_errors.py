"""asyncpg's exceptions, turned into the gateway's once, where every call goes through.

What a retry can cure (the server is down, restarting, out of connections, failing
over, or a call timed out) becomes `UnavailableError`, which the manager retries;
a missing privilege becomes `PermissionDeniedError`; anything else propagates.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg
from asyncpg import exceptions as pgexc

from stream_gateway import PermissionDeniedError, UnavailableError

__all__ = ["is_transient", "translated"]

_TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable
    TimeoutError,  # `command_timeout` or a pool acquire that waited too long
    pgexc.PostgresConnectionError,  # class 08, and a connection lost mid-call
    pgexc.OperatorInterventionError,  # class 57: shutting down, starting up, cancelled
    pgexc.InsufficientResourcesError,  # class 53: too many connections, disk full
    pgexc.TransactionRollbackError,  # class 40: serialization failure, deadlock
    pgexc.ReadOnlySQLTransactionError,  # a standby while a failover completes
    # A connection the server closed while the pool was resetting it: asyncpg finds
    # its protocol in an unexpected state. The pool drops that connection.
    pgexc.InternalClientError,
)


def is_transient(exc: BaseException) -> bool:
    """True for failures that a later attempt may not meet."""
    if isinstance(exc, _TRANSIENT):
        return True
    # asyncpg reports a call on a connection that was closed under it this way.
    return isinstance(exc, asyncpg.InterfaceError) and "closed" in str(exc)


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Re-raise asyncpg's failures while doing ``what`` as the gateway's errors."""
    try:
        yield
    except pgexc.InsufficientPrivilegeError as exc:
        raise PermissionDeniedError(f"PostgreSQL refused {what}: {exc}") from exc
    except Exception as exc:
        if is_transient(exc):
            detail = str(exc) or type(exc).__name__
            raise UnavailableError(f"PostgreSQL unavailable while {what}: {detail}") from exc
        raise
