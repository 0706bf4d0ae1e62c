"""Streaming listeners and the fan-out of changes to them as Server-Sent Events.

Every open ``text/event-stream`` GET is a :class:`Listener` kept in one list per namespace.
A write is turned into events for each listener whose location it changes, *before* the tree
is mutated (so the old value at the listener is still at hand), and queued on the listener's
unbounded in-memory channel; each connection drains its own channel, so a slow client never
holds up a write or the other listeners.

Events follow "Streaming from the REST API": ``put`` and ``patch`` carry
``{"path": <relative to the listened location>, "data": ...}``:

* a PUT/POST/DELETE at or below the listened location: ``put`` at the written path;
* a PATCH at or below it: one ``patch`` at the PATCH location with the (changed) keys as
  sent, multi-path keys keeping their ``/``;
* any write above it that changes the listened location: ``put`` at ``/`` with the new value;
* writes that change nothing produce no event.

Query listeners (``orderBy`` ...) first get the query result; afterwards each change to their
location is re-evaluated against the query and reported as a ``patch`` at ``/`` carrying the
children that entered (their value), left (``null``) or changed inside the result window, or
a ``put`` at ``/`` when the whole result is replaced (becomes empty, or stops being an object).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .query import Query, run_query
from .tree import Node, OutValue, Path, get_at, is_prefix, json_equal, path_str, to_output

WindowKind = Literal["null", "object", "primitive"]


@dataclass(frozen=True)
class WriteOp:
    """One location replaced by a write (a PATCH is several disjoint ops)."""

    path: Path
    value: Node


@dataclass(frozen=True)
class Message:
    """Bytes for the wire; ``final`` ends the response after them, ``drop`` aborts it."""

    data: bytes = b""
    final: bool = False
    drop: bool = False


def sse_event(name: str, payload: object) -> bytes:
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return f"event: {name}\ndata: {text}\n\n".encode()


def _put_event(path: Path, data: Node) -> bytes:
    return sse_event("put", {"path": path_str(path), "data": to_output(data)})


KEEP_ALIVE = sse_event("keep-alive", None)


@dataclass(eq=False)
class Listener:
    """One open event stream."""

    ns: str
    path: Path
    query: Query | None
    token: str | None
    admin: bool
    window_kind: WindowKind = "null"
    window_keys: frozenset[str] = frozenset()
    closed: bool = False
    outbox: MemoryObjectSendStream[Message] = field(init=False)
    inbox: MemoryObjectReceiveStream[Message] = field(init=False)

    def __post_init__(self) -> None:
        self.outbox, self.inbox = anyio.create_memory_object_stream[Message](math.inf)

    def push(self, message: Message) -> None:
        if not self.closed:
            self.outbox.send_nowait(message)

    def remember_window(self, result: Node) -> None:
        if result is None:
            self.window_kind, self.window_keys = "null", frozenset()
        elif isinstance(result, dict):
            self.window_kind, self.window_keys = "object", frozenset(result)
        else:
            self.window_kind, self.window_keys = "primitive", frozenset()


@dataclass
class _Impact:
    """How a write touches one listener's location."""

    whole: bool = False
    whole_value: Node = None
    within: list[tuple[Path, Node]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.whole and not self.within


def _impact(listener_path: Path, ops: Sequence[WriteOp], old_root: Node) -> _Impact:
    impact = _Impact()
    for op in ops:
        if is_prefix(op.path, listener_path):
            new_value = get_at(op.value, listener_path[len(op.path) :])
            if len(op.path) < len(listener_path):
                if json_equal(get_at(old_root, listener_path), new_value):
                    continue
            impact.whole, impact.whole_value = True, new_value
        elif is_prefix(listener_path, op.path):
            impact.within.append((op.path[len(listener_path) :], op.value))
    return impact


class Hub:
    """All open listeners, by namespace, and the fan-out of writes to them."""

    def __init__(self) -> None:
        self._by_ns: dict[str, list[Listener]] = {}

    def __iter__(self) -> Iterator[Listener]:
        for listeners in self._by_ns.values():
            yield from listeners

    def __len__(self) -> int:
        return sum(len(listeners) for listeners in self._by_ns.values())

    def open(self, listener: Listener, root: Node) -> None:
        """Register ``listener`` and queue its first ``put`` (the current value or result)."""
        value = get_at(root, listener.path)
        if listener.query is not None:
            value = run_query(value, listener.query)
            listener.remember_window(value)
        listener.push(Message(_put_event((), value)))
        self._by_ns.setdefault(listener.ns, []).append(listener)

    def remove(self, listener: Listener) -> None:
        listeners = self._by_ns.get(listener.ns, [])
        if listener in listeners:
            listeners.remove(listener)
        listener.closed = True
        listener.outbox.close()

    def finish(self, listener: Listener, event: str | None, data: object = None) -> None:
        """Send a last event (``cancel``, ``auth_revoked``) and end the stream."""
        if event is not None:
            listener.push(Message(sse_event(event, data)))
        listener.push(Message(final=True))
        self.remove(listener)

    def finish_where(self, predicate: Callable[[Listener], bool], event: str, data: object) -> int:
        doomed = [listener for listener in self if predicate(listener)]
        for listener in doomed:
            self.finish(listener, event, data)
        return len(doomed)

    def close_all(self) -> None:
        for listener in list(self):
            self.finish(listener, None)

    def drop_all(self) -> int:
        """Abort every connection without a proper end (a dropped listener)."""
        doomed = list(self)
        for listener in doomed:
            listener.push(Message(drop=True))
            self.remove(listener)
        return len(doomed)

    # ----------------------------------------------------------------------------------------
    # Writes

    def plan(
        self, ns: str, write_path: Path, ops: Sequence[WriteOp], old_root: Node, *, patch: bool
    ) -> Callable[[Node], None]:
        """Work out the events for a write before it is applied.

        Returns the function to call with the new root once the write is applied; it queues
        the events. ``ops`` must already exclude writes that change nothing.
        """
        plain: list[tuple[Listener, bytes]] = []
        queries: list[tuple[Listener, _Impact]] = []
        memo: dict[tuple[Path, int], bytes] = {}
        for listener in self._by_ns.get(ns, ()):
            impact = _impact(listener.path, ops, old_root)
            if impact.empty:
                continue
            if listener.query is not None:
                queries.append((listener, impact))
            else:
                event = self._plain_event(listener, write_path, impact, patch, memo)
                plain.append((listener, event))

        def deliver(new_root: Node) -> None:
            for listener, event in plain:
                listener.push(Message(event))
            for listener, impact in queries:
                self._query_event(listener, impact, new_root)

        return deliver

    @staticmethod
    def _plain_event(
        listener: Listener,
        write_path: Path,
        impact: _Impact,
        patch: bool,
        memo: dict[tuple[Path, int], bytes],
    ) -> bytes:
        if impact.whole:
            rel: Path = ()
            value = impact.whole_value
        elif not patch:
            rel, value = impact.within[0]
        else:
            base = write_path[len(listener.path) :] if is_prefix(listener.path, write_path) else ()
            data: dict[str, OutValue] = {
                "/".join(sub[len(base) :]): to_output(val) for sub, val in impact.within
            }
            return sse_event("patch", {"path": path_str(base), "data": data})
        key = (rel, id(value))
        if key not in memo:
            memo[key] = _put_event(rel, value)
        return memo[key]

    @staticmethod
    def _query_event(listener: Listener, impact: _Impact, new_root: Node) -> None:
        assert listener.query is not None
        result = run_query(get_at(new_root, listener.path), listener.query)
        old_kind, old_keys = listener.window_kind, listener.window_keys
        listener.remember_window(result)
        if impact.whole or old_kind != "object" or not isinstance(result, dict):
            if not (old_kind == "null" and result is None):
                listener.push(Message(_put_event((), result)))
            return
        touched = {sub[0] for sub, _ in impact.within}
        diff: dict[str, OutValue] = {key: None for key in old_keys - result.keys()}
        for key, value in result.items():
            if key not in old_keys or key in touched:
                diff[key] = to_output(value)
        if diff:
            listener.push(Message(sse_event("patch", {"path": "/", "data": diff})))
