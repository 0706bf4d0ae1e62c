"""What the commands print: tables for people, JSON for scripts, errors with exit codes."""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar

import anyio
import click

from .._errors import (
    GatewayError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)

__all__ = [
    "EXIT_FAILED",
    "EXIT_NOT_FOUND",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "emit_json",
    "fail",
    "run",
    "table",
    "when",
]

#: Exit codes: 0 done; 1 the store refused (e.g. a finished execution cannot be
#: cancelled); 2 bad arguments or store URL; 3 unknown id; 4 store unreachable.
EXIT_FAILED, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_UNAVAILABLE = 1, 2, 3, 4

T = TypeVar("T")


def when(ts: float | None) -> str:
    """A Unix time as ``2026-01-31 12:00:00`` UTC, or ``-``."""
    if ts is None or ts <= 0:
        return "-"
    try:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return "never"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, width: int | None = 60) -> None:
    """Print rows under headers, columns aligned (empty: a line saying so). Cells are
    cut at ``width`` characters (``None``: never; the last column is then not padded)."""
    if not rows:
        click.echo("(none)")
        return
    cells = [[_cell(value, width) for value in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, text in enumerate(row):
            widths[i] = max(widths[i], len(text))
    click.echo("  ".join(h.ljust(widths[i]) for i, h in enumerate(headers)).rstrip())
    for row in cells:
        click.echo("  ".join(text.ljust(widths[i]) for i, text in enumerate(row)).rstrip())


def _cell(value: Any, width: int | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = text.replace("\n", " ")
    return text if width is None or len(text) <= width else text[: width - 3] + "..."


def emit_json(value: Any) -> None:
    """Print one JSON document (one line)."""
    click.echo(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def fail(message: str, code: int, *, as_json: bool, status: str = "FAILED") -> NoReturn:
    """Print an error (JSON on stderr with ``--json``) and exit with ``code``."""
    if as_json:
        body = {"error": {"status": status, "message": message}}
        click.echo(json.dumps(body, ensure_ascii=False), err=True)
    else:
        click.echo(f"error: {message}", err=True)
    sys.exit(code)


def exit_code(error: GatewayError) -> int:
    """The exit code of a gateway error."""
    if isinstance(error, InvalidArgumentError):
        return EXIT_USAGE
    if isinstance(error, NotFoundError):
        return EXIT_NOT_FOUND
    if isinstance(error, UnavailableError):
        return EXIT_UNAVAILABLE
    return EXIT_FAILED


def run(body: Callable[[], Awaitable[T]], *, as_json: bool) -> T:
    """Run an async command body; gateway errors become a message and an exit code."""
    try:
        return anyio.run(body)
    except GatewayError as error:
        fail(error.message, exit_code(error), as_json=as_json, status=error.status)
    except KeyboardInterrupt:
        sys.exit(130)
