"""The command tree: ``streams``, ``flows``, ``schedules`` and ``worker``."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from .._errors import GatewayError
from ..streams.base import ChunkEvent, ErrorEvent, ResetEvent, StreamRecord
from ..streams.compaction import CompactionReport
from ._output import EXIT_FAILED, EXIT_USAGE, emit_json, fail, run, table, when
from ._stores import engine_for, manager_for, record_json

__all__ = ["cli"]

F = TypeVar("F", bound=Callable[..., Any])

_STATUSES = ["open", "done", "error", "cancelled"]
_EXECUTION_STATUSES = [
    "pending", "running", "sleeping", "waiting", "rolling_back", "completed", "failed",
    "cancelled",
]  # fmt: skip


def store_options(func: F) -> F:
    """``--store``, ``--json`` and ``--timeout``, on every command that opens a store."""
    func = click.option(
        "--timeout",
        type=click.FloatRange(min=0.1),
        default=10.0,
        show_default=True,
        help="Seconds to wait for a store that does not answer.",
    )(func)
    func = click.option(
        "--json", "as_json", is_flag=True, help="Print JSON for scripts (tail: one line per event)."
    )(func)
    func = click.option(
        "--store",
        envvar="STREAM_GATEWAY_STORE",
        metavar="URL",
        help="The store: a SQLite file, postgresql://..., firestore://<project>, redis://...,"
        " or a Realtime Database https:// URL. Default: $STREAM_GATEWAY_STORE.",
    )(func)
    return func


def _payload(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON ({exc}); quote strings: '\"yes\"'") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="stream-gateway", prog_name="stream-gateway")
@click.option(
    "--log-level",
    default="WARNING",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="Library log lines shown on stderr.",
)
def cli(log_level: str) -> None:
    """See and act on the streams, durable executions and schedules in a store.

    Every command takes --store URL (or $STREAM_GATEWAY_STORE) and --json. Exit codes:
    0 done, 1 refused by the store, 2 bad arguments or store URL, 3 unknown id,
    4 store unreachable.
    """
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


# -- streams ------------------------------------------------------------------------------


@cli.group()
def streams() -> None:
    """Streams: list, inspect, follow, cancel, purge expired ones."""


def _stream_row(record: StreamRecord) -> list[Any]:
    return [
        record.stream_id,
        record.flow or "-",
        record.status,
        record.length,
        (record.owner or "-")[:12],
        when(record.created_at),
        when(record.updated_at),
    ]


_STREAM_HEADERS = ["ID", "FLOW", "STATUS", "CHUNKS", "OWNER", "CREATED (UTC)", "UPDATED (UTC)"]


@streams.command("ls")
@store_options
@click.option("--status", type=click.Choice(_STATUSES), help="Only streams in this state.")
@click.option("--flow", help="Only streams of this flow.")
@click.option("--owner", help="Only streams of this owner (the stored hash).")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--cursor", help="Continue a listing (the cursor a previous page printed).")
def streams_ls(
    store: str | None,
    as_json: bool,
    timeout: float,
    status: Any,
    flow: str | None,
    owner: str | None,
    limit: int,
    cursor: str | None,
) -> None:
    """List streams, newest first."""

    async def body() -> None:
        async with manager_for(store, patience=timeout) as manager:
            page = await manager.list_streams(
                status=status, flow=flow, owner=owner, limit=limit, cursor=cursor
            )
            if as_json:
                emit_json(
                    {
                        "streams": [
                            record_json(r, abandoned=manager.is_abandoned(r)) for r in page.records
                        ],
                        "next_cursor": page.next_cursor,
                    }
                )
                return
            table(_STREAM_HEADERS, [_stream_row(r) for r in page.records])
            if page.next_cursor is not None:
                click.echo(f"more: --cursor {page.next_cursor}", err=True)

    run(body, as_json=as_json)


@streams.command("info")
@store_options
@click.argument("stream_id")
def streams_info(store: str | None, as_json: bool, timeout: float, stream_id: str) -> None:
    """Show one stream's record (no chunks)."""

    async def body() -> None:
        async with manager_for(store, patience=timeout) as manager:
            record = await manager.info(stream_id)
            data = record_json(record, abandoned=manager.is_abandoned(record))
            if as_json:
                emit_json(data)
                return
            for key, value in data.items():
                if key.endswith(("_at", "_until")):
                    value = when(value)
                click.echo(f"{key + ':':<18} {'-' if value is None else _scalar(value)}")

    run(body, as_json=as_json)


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    return json.dumps(value, ensure_ascii=False)


@streams.command("tail")
@store_options
@click.argument("stream_id")
@click.option(
    "--offset",
    default="0",
    show_default=True,
    help="Start at this chunk offset; 'end' starts after the chunks written so far.",
)
@click.option("--text", is_flag=True, help="Print string chunks as plain text, joined.")
def streams_tail(
    store: str | None, as_json: bool, timeout: float, stream_id: str, offset: str, text: bool
) -> None:
    """Follow a stream, live, from an offset to its end.

    Prints each chunk (OFFSET then its JSON), a durable flow's retractions ("reset:
    chunks from N are void"), then the result. Ends with exit code 0
    when the stream ends with a result, 1 when it ends in an error or is cancelled.
    """
    if offset != "end" and not offset.isdigit():
        raise click.BadParameter("a chunk offset (0, 1, ...) or 'end'", param_hint="--offset")

    async def body() -> int:
        async with manager_for(store, patience=timeout) as manager:
            start = (await manager.info(stream_id)).length if offset == "end" else int(offset)
            async for event in manager.subscribe(stream_id, start):
                if isinstance(event, ChunkEvent):
                    if as_json:
                        emit_json({"offset": event.offset, "chunk": event.data})
                    elif text and isinstance(event.data, str):
                        click.echo(event.data, nl=False)
                    else:
                        click.echo(f"{event.offset}\t{event.raw.decode()}")
                elif isinstance(event, ErrorEvent):
                    error = {"status": event.status, "message": event.message}
                    if as_json:
                        emit_json({"error": error})
                    else:
                        click.echo(f"{'' if not text else chr(10)}error: {event.status}: "
                                   f"{event.message}", err=True)  # fmt: skip
                    return EXIT_FAILED
                elif isinstance(event, ResetEvent):
                    # A durable flow retracted what a failed step attempt streamed.
                    if as_json:
                        emit_json({"reset": {"offset": event.offset, "from": event.void_from}})
                    else:
                        click.echo(f"{chr(10) if text else ''}reset: chunks from "
                                   f"{event.void_from} are void", err=text)  # fmt: skip
                else:
                    if as_json:
                        emit_json({"result": event.result})
                    else:
                        click.echo(f"{chr(10) if text else ''}result: {event.raw.decode()}")
                    return 0
        return 0

    sys.exit(run(body, as_json=as_json))


@streams.command("cancel")
@store_options
@click.argument("stream_id")
def streams_cancel(store: str | None, as_json: bool, timeout: float, stream_id: str) -> None:
    """Ask a stream's flow, in whatever process runs it, to stop (cancelled)."""

    async def body() -> bool:
        async with manager_for(store, patience=timeout) as manager:
            return await manager.cancel(stream_id)

    requested = run(body, as_json=as_json)
    if as_json:
        emit_json({"id": stream_id, "cancel_requested": requested})
    else:
        click.echo("cancellation requested" if requested else "the stream had already finished")


@streams.command("purge")
@store_options
def streams_purge(store: str | None, as_json: bool, timeout: float) -> None:
    """Delete expired streams now (servers also do this periodically)."""

    async def body() -> int:
        async with manager_for(store, patience=timeout) as manager:
            return await manager.purge()

    removed = run(body, as_json=as_json)
    if as_json:
        emit_json({"purged": removed})
    else:
        click.echo(f"purged {removed} expired stream{'s' if removed != 1 else ''}")


@streams.command("compact")
@store_options
@click.argument("stream_id")
def streams_compact(store: str | None, as_json: bool, timeout: float, stream_id: str) -> None:
    """Coalesce a finished stream's chunks (text deltas joined) into far fewer stored
    entries. A full replay stays the same; a resume inside a joined range is then
    refused (410) and clients replay from 0. A stream already compacted, or one it
    would not shrink, is left as it is (exit code 0, the reason printed)."""

    async def body() -> CompactionReport:
        async with manager_for(store, patience=timeout) as manager:
            return await manager.compact(stream_id)

    report = run(body, as_json=as_json)
    if as_json:
        emit_json(
            {
                "id": report.stream_id,
                "compacted": report.compacted,
                "length": report.length,
                "chunks_before": report.chunks_before,
                "entries_after": report.entries_after,
                "bytes_before": report.bytes_before,
                "bytes_after": report.bytes_after,
                "reason": report.reason,
            }
        )
    elif report.compacted:
        click.echo(
            f"compacted: {report.chunks_before} chunks ({report.bytes_before} bytes) ->"
            f" {report.entries_after} entries ({report.bytes_after} bytes)"
        )
    else:
        click.echo(f"left as it is: {report.reason}")


# -- durable executions -------------------------------------------------------------------


def flows_option(func: F) -> F:
    """``--flows module:attr``: the flow definitions, where a command can use them."""
    return click.option(
        "--flows",
        metavar="MODULE:ATTR",
        help="The durable flows (a flow, a list, or a DurableEngine): resume then"
        " checks the payload against the interrupt's schema at once.",
    )(func)


@cli.group()
def flows() -> None:
    """Durable executions: list, show, detail, signal, resume, cancel, recover, wake."""


def _operation(operation: Any) -> dict[str, Any]:
    body: dict[str, Any] = operation.to_json()
    return body


def _print_operation(op: dict[str, Any]) -> None:
    for key in ("name", "flow", "status", "blockedOnStep", "createdAt", "updatedAt", "wakeAt"):
        if key in op:
            click.echo(f"{key + ':':<15} {'-' if op[key] is None else op[key]}")
    result = op.get("result") or {}
    if "response" in result:
        click.echo(f"{'response:':<15} {json.dumps(result['response'], ensure_ascii=False)}")
    if "error" in result:
        error = result["error"]
        click.echo(f"{'error:':<15} {error.get('status')}: {error.get('message')}")


@flows.command("ls")
@store_options
@click.option("--status", type=click.Choice(_EXECUTION_STATUSES), help="Only this state.")
@click.option("--flow", help="Only executions of this flow.")
@click.option("--owner", help="Only executions of this owner (the stored hash).")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--cursor", help="Continue a listing (the cursor a previous page printed).")
def flows_ls(
    store: str | None,
    as_json: bool,
    timeout: float,
    status: str | None,
    flow: str | None,
    owner: str | None,
    limit: int,
    cursor: str | None,
) -> None:
    """List durable executions, newest first."""

    async def body() -> None:
        async with engine_for(store, patience=timeout) as engine:
            page = await engine.list(
                status=status,
                flow=flow,
                owner=owner,
                any_owner=owner is None,
                cursor=cursor,
                limit=limit,
            )
        items = [_operation(op) for op in page.items]
        if as_json:
            emit_json({"executions": items, "next_cursor": page.cursor})
            return
        table(
            ["ID", "FLOW", "STATUS", "BLOCKED ON", "CREATED (UTC)", "UPDATED (UTC)"],
            [
                [op.name, op.flow, op.status, op.blocked_on_step, when(op.created_at),
                 when(op.updated_at)]
                for op in page.items
            ],
        )  # fmt: skip
        if page.cursor is not None:
            click.echo(f"more: --cursor {page.cursor}", err=True)

    run(body, as_json=as_json)


@flows.command("show")
@store_options
@click.argument("execution_id")
def flows_show(store: str | None, as_json: bool, timeout: float, execution_id: str) -> None:
    """Show one execution: status, what it waits on, its result or error."""

    async def body() -> dict[str, Any]:
        async with engine_for(store, patience=timeout) as engine:
            return _operation(await engine.get_state(execution_id))

    op = run(body, as_json=as_json)
    if as_json:
        emit_json(op)
    else:
        _print_operation(op)


@flows.command("detail")
@store_options
@click.argument("execution_id")
def flows_detail(store: str | None, as_json: bool, timeout: float, execution_id: str) -> None:
    """Show an execution with its steps and its audit timeline (errors in full)."""

    async def body() -> dict[str, Any]:
        async with engine_for(store, patience=timeout) as engine:
            detail: dict[str, Any] = (await engine.detail(execution_id)).to_json()
            return detail

    detail = run(body, as_json=as_json)
    if as_json:
        emit_json(detail)
        return
    _print_operation(detail["operation"])
    click.echo("\nsteps:")
    table(
        ["STEP", "KIND", "STATUS", "ATTEMPTS", "ERROR"],
        [
            [s.get("path") or s.get("key"), s.get("kind"), s.get("status"), s.get("attempts"),
             _error_text(s.get("error"))]
            for s in detail["steps"]
        ],
        width=None,
    )  # fmt: skip
    click.echo("\ntimeline:")
    table(
        ["AT", "KIND", "STEP", "DATA"],
        [
            [a["at"], a["kind"], a.get("step"), _data_text(a.get("data"))]
            for a in detail["timeline"]
        ],
        width=None,
    )


def _error_text(error: Any) -> str | None:
    """An error as operators read it: its message, then the original cause's type and
    message (kept for operators only, under ``operator``)."""
    if not isinstance(error, dict):
        return None
    text = f"{error.get('status', '')}: {error.get('message', '')}"
    operator = error.get("operator")
    if isinstance(operator, dict):
        cause = operator.get("cause", operator)
        if isinstance(cause, dict) and cause.get("message"):
            text += f" ({cause.get('type') or 'cause'}: {cause['message']})"
    return text


def _data_text(data: Any) -> str | None:
    """An audit entry's data as ``key=value`` pairs, errors as `_error_text`."""
    if not isinstance(data, dict) or not data:
        return None
    parts = []
    for key, value in data.items():
        if key == "error":
            parts.append(f"error={_error_text(value)}")
        elif key.endswith("_at") and isinstance(value, int | float):
            parts.append(f"{key}={when(value)}")
        else:
            parts.append(f"{key}={_scalar(value)}")
    return " ".join(parts)


def _act(
    name: str, action: Callable[[Any], Any], *, flows_spec: str | None = None
) -> Callable[[str | None, bool, float], None]:
    def go(store: str | None, as_json: bool, timeout: float) -> None:
        async def body() -> dict[str, Any]:
            async with engine_for(store, patience=timeout, flows=flows_spec) as engine:
                return _operation(await action(engine))

        op = run(body, as_json=as_json)
        if as_json:
            emit_json(op)
        else:
            click.echo(f"{name}: {op['name']} is now {op['status']}")

    return go


@flows.command("signal")
@store_options
@click.argument("execution_id")
@click.argument("name")
@click.argument("payload", required=False)
def flows_signal(
    store: str | None,
    as_json: bool,
    timeout: float,
    execution_id: str,
    name: str,
    payload: str | None,
) -> None:
    """Send the signal NAME with a JSON PAYLOAD (default null); it is buffered."""
    value = _payload(payload)
    _act("signal sent", lambda e: e.signal(execution_id, name, value))(store, as_json, timeout)


@flows.command("resume")
@store_options
@flows_option
@click.argument("execution_id")
@click.argument("step")
@click.argument("payload")
def flows_resume(
    store: str | None,
    as_json: bool,
    timeout: float,
    flows: str | None,
    execution_id: str,
    step: str,
    payload: str,
) -> None:
    """Answer the interrupt STEP (as `show` prints it under blockedOnStep) with PAYLOAD."""
    value = _payload(payload)
    _act("resumed", lambda e: e.resume(execution_id, step, value), flows_spec=flows)(
        store, as_json, timeout
    )


@flows.command("cancel")
@store_options
@click.argument("execution_id")
def flows_cancel(store: str | None, as_json: bool, timeout: float, execution_id: str) -> None:
    """Cancel an unfinished execution (and its children)."""
    _act("cancelled", lambda e: e.cancel(execution_id))(store, as_json, timeout)


@flows.command("recover")
@store_options
@click.argument("execution_id")
def flows_recover(store: str | None, as_json: bool, timeout: float, execution_id: str) -> None:
    """Run a failed execution again from its failed steps."""
    _act("recovered", lambda e: e.recover(execution_id))(store, as_json, timeout)


@flows.command("wake")
@store_options
@click.argument("execution_id")
def flows_wake(store: str | None, as_json: bool, timeout: float, execution_id: str) -> None:
    """Replay a pending, sleeping or waiting execution now."""
    _act("woken", lambda e: e.wake(execution_id))(store, as_json, timeout)


# -- schedules ----------------------------------------------------------------------------


@cli.group()
def schedules() -> None:
    """Recurring schedules: list, pause, resume, remove."""


@schedules.command("ls")
@store_options
@click.option("--owner", help="Only schedules of this owner (the stored hash).")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--after", metavar="ID", help="Only schedules whose id sorts after ID.")
def schedules_ls(
    store: str | None,
    as_json: bool,
    timeout: float,
    owner: str | None,
    limit: int,
    after: str | None,
) -> None:
    """List schedules by id."""

    async def body() -> list[Any]:
        async with engine_for(store, patience=timeout) as engine:
            return await engine.list_schedules(
                owner=owner, any_owner=owner is None, after=after, limit=limit
            )

    found = run(body, as_json=as_json)
    if as_json:
        emit_json({"schedules": [s.to_json() for s in found]})
        return
    table(
        ["ID", "FLOW", "EVERY", "PAUSED", "NEXT (UTC)", "LAST EXECUTION"],
        [
            [s.id, s.flow, s.cron or f"{s.interval:g}s", s.paused, when(s.next_at),
             s.last_execution]
            for s in found
        ],
    )  # fmt: skip


def _schedule_action(verb: str, method: str) -> Callable[..., None]:
    def command(store: str | None, as_json: bool, timeout: float, schedule_id: str) -> None:
        async def body() -> Any:
            async with engine_for(store, patience=timeout) as engine:
                return await getattr(engine, method)(schedule_id)

        schedule = run(body, as_json=as_json)
        if as_json:
            emit_json({"removed": schedule_id} if schedule is None else schedule.to_json())
        else:
            click.echo(f"{verb}: {schedule_id}")

    return command


for _name, _verb, _method, _help in (
    ("pause", "paused", "pause_schedule", "Stop firing ticks (running executions go on)."),
    ("resume", "resumed", "resume_schedule", "Fire ticks again, from the next one after now."),
    ("remove", "removed", "remove_schedule", "Delete the schedule (its executions stay)."),
):
    schedules.command(_name, help=_help)(
        store_options(click.argument("schedule_id")(_schedule_action(_verb, _method)))
    )


# -- worker -------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--flows", "flows_spec", required=True, metavar="MODULE:ATTR",
    help="The durable flows to run: a flow, a list of them, or a DurableEngine.",
)  # fmt: skip
@click.option(
    "--store",
    envvar="STREAM_GATEWAY_STORE",
    metavar="URL",
    help="The durable store (default: the engine's own, else $STREAM_GATEWAY_STORE).",
)
@click.option("--worker-id", help="A stable id: a restart takes back its own leases.")
@click.option("--concurrency", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--poll-interval", type=float, default=0.5, show_default=True)
@click.option("--lease", type=float, default=30.0, show_default=True)
@click.option("--grace", type=float, default=10.0, show_default=True)
@click.option("--ready", is_flag=True, help="Print 'ready' once serving.")
def worker(flows_spec: str, store: str | None, **options: Any) -> None:
    """Run durable flows until SIGINT/SIGTERM (the same as stream-gateway-worker)."""
    import argparse

    import anyio

    from ..durable.cli import _serve, load_engine
    from ..stores import open_durable_store
    from ._stores import store_url

    logging.getLogger().setLevel(min(logging.getLogger().level, logging.INFO))
    sys.path.insert(0, "")
    try:
        engine = load_engine(flows_spec, None)
        if store:
            engine.store = open_durable_store(store_url(store, must_exist=False))
    except GatewayError as error:
        fail(error.message, EXIT_USAGE, as_json=False, status=error.status)
    except (ImportError, AttributeError) as error:
        fail(f"cannot load --flows {flows_spec}: {error}", EXIT_USAGE, as_json=False)
    anyio.run(_serve, engine, argparse.Namespace(**options))
