"""`describe`: the static shape of a durable flow, recorded by running it against a
recording context in which no step body, matcher or handler runs and nothing is
stored.

Durable calls return a `_Placeholder` (truthy, any attribute, call, item or
arithmetic gives another), so flow code that inspects results follows one path:
the shape is that path, with every `join`/`race` branch, one `loop` iteration and
every `switch` case listed. A flow that fails on a placeholder, or loops forever,
gives the shape recorded so far with ``complete: false``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from .._codec import Codec
from .._json import dumps
from ._decisions import DEFAULT_CASE, Case

__all__ = ["describe_flow"]

#: At most this many nodes are recorded (a flow looping forever stops here).
MAX_NODES = 500


class _Placeholder:
    """What a durable call returns while describing: stands in for any value."""

    def __getattr__(self, name: str) -> _Placeholder:
        if name.startswith("__"):
            raise AttributeError(name)
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> _Placeholder:
        return self

    def __getitem__(self, key: Any) -> _Placeholder:
        return self

    def __iter__(self) -> Any:
        return iter(())

    def __bool__(self) -> bool:
        return True

    def __len__(self) -> int:
        return 0

    def __str__(self) -> str:
        return "<value>"

    def __int__(self) -> int:
        return 0

    def __float__(self) -> float:
        return 0.0

    def _op(self, *_: Any) -> _Placeholder:
        return self

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _op
    __truediv__ = __rtruediv__ = __floordiv__ = __mod__ = __neg__ = _op
    __lt__ = __le__ = __gt__ = __ge__ = _op


_VALUE = _Placeholder()


class _Full(BaseException):
    """Raised once `MAX_NODES` nodes were recorded."""


class _Recorder:
    def __init__(self) -> None:
        self.count = 0

    def add(self, nodes: list[dict[str, Any]], node: dict[str, Any]) -> None:
        self.count += 1
        if self.count > MAX_NODES:
            raise _Full()
        nodes.append(node)


class RecordingContext:
    """A stand-in for `DurableContext` that records the calls made on it."""

    def __init__(self, recorder: _Recorder, nodes: list[dict[str, Any]], name: str) -> None:
        self._recorder = recorder
        self._nodes = nodes
        self.flow_name = name
        self.flow_id = "describe"
        self.owner = None
        self.branch = ""

    def _add(self, node_type: str, /, **fields: Any) -> None:
        self._recorder.add(self._nodes, {"type": node_type, **fields})

    async def _nested(self, fn: Callable[[RecordingContext], Any], *args: Any) -> list[Any]:
        nodes: list[dict[str, Any]] = []
        try:
            await fn(RecordingContext(self._recorder, nodes, self.flow_name), *args)
        except _Full:
            raise
        except Exception:
            nodes.append({"type": "incomplete"})
        return nodes

    async def run(self, name: str, fn: Any, *, rollback: Any = None, **_: Any) -> Any:
        self._add("step", name=name, rollback=rollback is not None)
        return _VALUE

    async def run_action(self, action: Any, input: Any = None, **_: Any) -> Any:
        self._add("action", flow=action.name)
        return _VALUE

    async def poll(self, name: str, fn: Any, **_: Any) -> Any:
        self._add("poll", name=name)
        return _VALUE

    async def sleep(self, name: str, duration: Any) -> None:
        self._add("sleep", name=name)

    async def sleep_until(self, name: str, when: Any) -> None:
        self._add("sleep", name=name)

    async def interrupt(self, name: str, schema: Any = None) -> Any:
        self._add("interrupt", name=name, schema=Codec(schema).json_schema())
        return _VALUE

    async def wait_for_signal(self, name: str, signal: str, *, schema: Any = None, **_: Any) -> Any:
        self._add("signal", name=name, signal=signal, schema=Codec(schema).json_schema())
        return _VALUE

    async def messages(self, name: str, names: Collection[str], **_: Any) -> list[Any]:
        self._add("messages", name=name, signals=sorted(set(names)))
        return []

    async def wait_for(self, name: str, flow_ids: Collection[str]) -> list[Any]:
        self._add("wait_for", name=name)
        return []

    async def _branches(self, kind: str, name: str, branches: Mapping[str, Any]) -> None:
        shapes = {b: await self._nested(fn) for b, fn in branches.items()}
        self._add(kind, name=name, branches=shapes)

    async def join(self, name: str, branches: Mapping[str, Any]) -> dict[str, Any]:
        await self._branches("join", name, branches)
        return {b: _VALUE for b in branches}

    async def race(self, name: str, branches: Mapping[str, Any]) -> tuple[str, Any]:
        await self._branches("race", name, branches)
        return next(iter(branches)), _VALUE

    async def loop(self, name: str, body: Any, *, state: Any = None, **_: Any) -> Any:
        self._add("loop", name=name, body=await self._nested(body, state))
        return _VALUE

    async def switch(
        self, name: str, value: Any, cases: Sequence[Case], default: Any = None, **_: Any
    ) -> tuple[str, Any]:
        ids = [c.id for c in cases]
        self._add("switch", name=name, cases=ids, default=default is not None)
        return (ids[0] if ids else DEFAULT_CASE), _VALUE

    async def note(self, message: str, **meta: Any) -> None:
        self._add("note", message=message)

    async def removed(self, name: str, *, kind: str = "step") -> None:
        self._add("removed", name=name, kind=kind)

    async def rollback_checkpoint(self, name: str) -> None:
        self._add("checkpoint", name=name)

    async def rollback(self) -> None:
        self._add("rollback")

    async def now(self) -> Any:
        self._add("value", kind="now")
        return _VALUE

    async def random(self) -> float:
        self._add("value", kind="random")
        return 0.0

    async def uuid(self) -> Any:
        self._add("value", kind="uuid")
        return _VALUE


async def describe_flow(flow: Any, sample_input: Any = None) -> dict[str, Any]:
    """``{flow, description, input, output, nodes, complete}`` (JSON): see the module."""
    parsed = _VALUE if sample_input is None else flow.parse_input(sample_input)
    recorder = _Recorder()
    nodes: list[dict[str, Any]] = []
    complete = True
    try:
        await flow.fn(parsed, RecordingContext(recorder, nodes, flow.name))
    except (_Full, Exception):
        complete = False
    schemas = flow.schemas()
    shape = {
        "flow": flow.name,
        "description": flow.description,
        "input": schemas.get("input"),
        "output": schemas.get("output"),
        "nodes": nodes,
        "complete": complete,
    }
    dumps(shape)  # JSON-serializable, or a bug here
    return shape
