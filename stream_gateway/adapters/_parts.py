"""What every adapter's chunks are made of: AI SDK UI-message stream parts (dicts).

An adapter feeds text and reasoning deltas to `TextParts`, keyed by where they come
from (a message, an output item), and builds tool parts with the functions below; the
chunk shapes are documented once, in ``docs/agents.md``.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Literal

from pydantic import BaseModel

__all__ = ["AgentPrompt", "TextParts", "tool_error", "tool_input", "tool_output"]

Part = dict[str, Any]
Kind = Literal["text", "reasoning"]


class AgentPrompt(BaseModel):
    """The input of an agent flow."""

    prompt: str


class TextParts:
    """The open text and reasoning parts of one run.

    Each source (a message being streamed, say) has at most one open part: a delta of
    another kind closes the open one, so that a reader sees the parts in the order the
    model produced them. Part ids (``text-0``, ``reasoning-1``...) are unique within
    the run.
    """

    def __init__(self) -> None:
        self._next_id = 0
        self._open: dict[Hashable, tuple[Kind, str]] = {}  # source -> (kind, part id)

    @property
    def next_id(self) -> int:
        """The number the next part's id gets."""
        return self._next_id

    def restart(self, next_id: int) -> None:
        """Forget the open parts and number the next part ``next_id`` (a model
        response that starts over, or one replayed from a journal)."""
        self._next_id = next_id
        self._open.clear()

    def delta(self, source: Hashable, kind: Kind, text: str) -> list[Part]:
        """The parts that add ``text`` to ``source``'s open part of ``kind`` (opening
        it, and closing a part of the other kind, as needed). None for empty text."""
        if not text:
            return []
        parts: list[Part] = []
        opened = self._open.get(source)
        if opened is not None and opened[0] != kind:
            parts += self.end(source)
            opened = None
        if opened is None:
            opened = (kind, f"{kind}-{self._next_id}")
            self._next_id += 1
            self._open[source] = opened
            parts.append({"type": f"{kind}-start", "id": opened[1]})
        parts.append({"type": f"{kind}-delta", "id": opened[1], "delta": text})
        return parts

    def end(self, source: Hashable) -> list[Part]:
        """The part that closes ``source``'s open part (none if it has none)."""
        opened = self._open.pop(source, None)
        if opened is None:
            return []
        kind, part_id = opened
        return [{"type": f"{kind}-end", "id": part_id}]

    def end_all(self) -> list[Part]:
        """The parts that close every open part, oldest first."""
        parts: list[Part] = []
        for source in list(self._open):
            parts += self.end(source)
        return parts


def tool_input(call_id: str, name: str, input: Any) -> Part:
    """The agent calls tool ``name`` with ``input`` (its parsed arguments)."""
    return {"type": "tool-input-available", "toolCallId": call_id, "toolName": name, "input": input}


def tool_output(call_id: str, output: Any) -> Part:
    """The call ``call_id`` returned ``output`` (JSON-able)."""
    return {"type": "tool-output-available", "toolCallId": call_id, "output": output}


def tool_error(call_id: str, error: str) -> Part:
    """The call ``call_id`` did not succeed."""
    return {"type": "tool-output-error", "toolCallId": call_id, "errorText": error}
