"""What asyncpg raises, as the gateway's errors: retryable or not, and nothing else."""

from __future__ import annotations

import asyncpg
import pytest
from asyncpg import exceptions as pgexc

from stream_gateway import PermissionDeniedError, UnavailableError
from stream_gateway_postgres._errors import translated

TRANSIENT: list[BaseException] = [
    ConnectionRefusedError(111, "refused"),
    ConnectionResetError(104, "reset"),
    TimeoutError(),
    pgexc.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    pgexc.AdminShutdownError("terminating connection due to administrator command"),
    pgexc.CannotConnectNowError("the database system is starting up"),
    pgexc.TooManyConnectionsError("sorry, too many clients already"),
    pgexc.SerializationError("could not serialize access"),
    pgexc.DeadlockDetectedError("deadlock detected"),
    pgexc.ReadOnlySQLTransactionError("cannot execute UPDATE in a read-only transaction"),
    pgexc.InternalClientError("cannot switch to state 12; another operation (2) is in progress"),
    asyncpg.InterfaceError("connection is closed"),
]
OTHERS: list[Exception] = [
    pgexc.UniqueViolationError("duplicate key"),
    pgexc.UndefinedTableError("relation does not exist"),
    asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
    ValueError("not a database error"),
]


@pytest.mark.parametrize("error", TRANSIENT, ids=lambda e: type(e).__name__)
def test_what_a_retry_can_cure_is_unavailable(error: BaseException) -> None:
    with pytest.raises(UnavailableError, match="while reading chunks") as caught:
        with translated("reading chunks"):
            raise error
    assert caught.value.__cause__ is error


def test_a_missing_privilege_is_permission_denied() -> None:
    with pytest.raises(PermissionDeniedError, match="refused appending"):
        with translated("appending"):
            raise pgexc.InsufficientPrivilegeError("permission denied for table streams")


@pytest.mark.parametrize("error", OTHERS, ids=lambda e: type(e).__name__)
def test_anything_else_propagates_as_it_is(error: Exception) -> None:
    with pytest.raises(type(error)) as caught:
        with translated("reading chunks"):
            raise error
    assert caught.value is error
