"""`describe`: the static shape of a durable flow, recorded by running it against a
recording context in which no step body, matcher or handler runs and nothing is
stored.

Durable calls return a `_Placeholder` (truthy, any attribute, call, item or
arithmetic gives another), so flow code that inspects results follows one path,
with every `join`/`race` branch and one `loop` iteration. Decisions are explored:
the flow is recorded again for each `switch` case and each `race` winner (what the
flow does with the returned id), and the nodes that differ go into that case
(``cases`` / ``winners``, each ``{id, nodes}``) while the nodes every path shares
follow the decision. A flow that fails on a placeholder, loops forever, or has
more than `MAX_RUNS` paths gives what was recorded with ``complete: false``.
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
#: At most this many recordings explore a flow's decisions.
MAX_RUNS = 64
#: Internal keys of a decision node: its call order and its options.
_ORDER, _OPTIONS = "$decision", "$options"


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
    def __init__(self, choices: Sequence[str] = ()) -> None:
        self.count = 0
        self.choices = list(choices)
        self.decisions = 0

    def decide(self, options: list[str]) -> tuple[int, str]:
        """The next decision's order and the option taken: the one chosen for it,
        else the first."""
        order = self.decisions
        self.decisions += 1
        if order < len(self.choices) and self.choices[order] in options:
            return order, self.choices[order]
        return order, options[0]

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
        self.evicted = False

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

    async def run(
        self, name: str, fn: Any, *, rollback: Any = None, ephemeral: bool = False, **_: Any
    ) -> Any:
        self._add("step", name=name, rollback=rollback is not None, ephemeral=ephemeral)
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

    async def _branches(self, name: str, branches: Mapping[str, Any]) -> dict[str, Any]:
        return {b: await self._nested(fn) for b, fn in branches.items()}

    async def join(self, name: str, branches: Mapping[str, Any]) -> dict[str, Any]:
        self._add("join", name=name, branches=await self._branches(name, branches))
        return {b: _VALUE for b in branches}

    async def race(self, name: str, branches: Mapping[str, Any]) -> tuple[str, Any]:
        shapes = await self._branches(name, branches)
        options = list(branches)
        order, winner = self._recorder.decide(options)
        self._add("race", name=name, branches=shapes, **{_ORDER: order, _OPTIONS: options})
        return winner, _VALUE

    async def loop(self, name: str, body: Any, *, state: Any = None, **_: Any) -> Any:
        self._add("loop", name=name, body=await self._nested(body, state))
        return _VALUE

    async def switch(
        self, name: str, value: Any, cases: Sequence[Case], default: Any = None, **_: Any
    ) -> tuple[str, Any]:
        options = [c.id for c in cases] + ([DEFAULT_CASE] if default is not None else [])
        if not options:
            raise ValueError("a switch without cases")  # the real one refuses it too
        order, chosen = self._recorder.decide(options)
        self._add(
            "switch",
            name=name,
            default=default is not None,
            **{_ORDER: order, _OPTIONS: options},
        )
        return chosen, _VALUE

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


def _find(nodes: list[dict[str, Any]], order: int) -> tuple[list[dict[str, Any]], int] | None:
    """The list holding the decision node of that order, and its index there."""
    for index, node in enumerate(nodes):
        if node.get(_ORDER) == order:
            return nodes, index
        inner: list[list[dict[str, Any]]] = list(node.get("branches", {}).values())
        if "body" in node:
            inner.append(node["body"])
        inner.extend(path["nodes"] for path in node.get("paths", ()) if "nodes" in path)
        for nested in inner:
            found = _find(nested, order)
            if found is not None:
                return found
    return None


def _plain(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``nodes`` with the decision bookkeeping turned into ``cases``/``winners``."""
    out = []
    for node in nodes:
        node = dict(node)
        order, options = node.pop(_ORDER, None), node.pop(_OPTIONS, None)
        paths = node.pop("paths", None)
        if order is not None:
            if paths is None:  # not explored (too many paths)
                paths = [{"id": option} for option in options or ()]
            key = "cases" if node["type"] == "switch" else "winners"
            node[key] = [{**p, "nodes": _plain(p["nodes"])} if "nodes" in p else p for p in paths]
        if "branches" in node:
            node["branches"] = {b: _plain(n) for b, n in node["branches"].items()}
        if "body" in node:
            node["body"] = _plain(node["body"])
        out.append(node)
    return out


class _Explorer:
    """Records a flow once per path through its decisions (see the module)."""

    def __init__(self, flow: Any, parsed: Any) -> None:
        self.flow = flow
        self.parsed = parsed
        self.runs = 0
        self.complete = True

    async def record(self, choices: Sequence[str]) -> list[dict[str, Any]]:
        self.runs += 1
        nodes: list[dict[str, Any]] = []
        try:
            await self.flow.fn(
                self.parsed, RecordingContext(_Recorder(choices), nodes, self.flow.name)
            )
        except (_Full, Exception):
            self.complete = False
        return nodes

    async def build(self, choices: list[str]) -> list[dict[str, Any]]:
        """The nodes with ``choices`` taken at the first decisions, every later
        decision explored."""
        nodes = await self.record(choices)
        order = len(choices)
        found = _find(nodes, order)
        if found is None:
            return nodes
        options: list[str] = found[0][found[1]][_OPTIONS]
        if self.runs + len(options) > MAX_RUNS:
            self.complete = False
            return nodes
        trees, tails = [], []
        for option in options:
            tree = await self.build([*choices, option])
            place = _find(tree, order)
            if place is None:  # the flow took another way there: keep the first path
                return nodes
            trees.append((tree, place))
            tails.append(place[0][place[1] + 1 :])
        shared = _shared_suffix([_plain(t) for t in tails])
        first, (holder, index) = trees[0]
        holder[index] = {
            **holder[index],
            "paths": [
                {"id": option, "nodes": tail[: len(tail) - shared]}
                for option, tail in zip(options, tails, strict=True)
            ],
        }
        del holder[index + 1 : len(holder) - shared]
        return first


def _shared_suffix(tails: list[list[dict[str, Any]]]) -> int:
    """How many last nodes every tail has alike."""
    count = 0
    while all(len(t) > count for t in tails) and all(
        t[len(t) - 1 - count] == tails[0][len(tails[0]) - 1 - count] for t in tails
    ):
        count += 1
    return count


async def describe_flow(flow: Any, sample_input: Any = None) -> dict[str, Any]:
    """``{flow, description, input, output, nodes, complete}`` (JSON): see the module."""
    parsed = _VALUE if sample_input is None else flow.parse_input(sample_input)
    explorer = _Explorer(flow, parsed)
    nodes = _plain(await explorer.build([]))
    schemas = flow.schemas()
    shape = {
        "flow": flow.name,
        "description": flow.description,
        "input": schemas.get("input"),
        "output": schemas.get("output"),
        "nodes": nodes,
        "complete": explorer.complete,
    }
    dumps(shape)  # JSON-serializable, or a bug here
    return shape
