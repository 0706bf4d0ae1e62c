"""`UIMessageEncoder`: a flow's chunks as the AI SDK's UI-message chunks.

What a flow may send, and what each becomes:

- a string: text, streamed as ``text-start``, ``text-delta``..., ``text-end``;
- ``{"type": "reasoning", "text": ...}``: the same for reasoning;
- ``{"type": "tool-call", "toolCallId", "toolName", "input"}``: ``tool-input-start``
  then ``tool-input-available``;
- ``{"type": "tool-result", "toolCallId", "output"}``: ``tool-output-available``;
  with ``"errorText"`` instead of ``"output"``: ``tool-output-error``;
- ``{"type": "data-<name>", "data": ..., "id"?: ...}``: a data part, as is;
- any other UI-message chunk (``source-url``, ``file``, ``message-metadata``, ...) as is.

A text or reasoning run ends when something else comes. The encoder is
deterministic: the same chunks always give the same UI chunks, so a reader can
re-derive them from the start of the stored stream and skip what it already sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..._errors import InvalidArgumentError

__all__ = ["UIMessageEncoder"]

UIChunk = dict[str, Any]

# UI-message chunk types a flow may send unchanged (the AI SDK validates them).
_PASS_THROUGH = frozenset(
    {
        "text-start", "text-delta", "text-end", "reasoning-start", "reasoning-delta",
        "reasoning-end", "tool-input-start", "tool-input-delta", "tool-input-available",
        "tool-input-error", "tool-output-available", "tool-output-error", "source-url",
        "source-document", "file", "start-step", "finish-step", "message-metadata",
    }
)  # fmt: skip


class UIMessageEncoder:
    """Turns one stream's chunks into UI-message chunks, in order.

    Call `start` once, `chunk` for each flow chunk, then `finish` or `error`.
    Each returns the UI chunks to send (dicts ready for JSON).
    """

    def __init__(self, message_id: str) -> None:
        self.message_id = message_id
        self._open: tuple[str, str] | None = None  # ("text" | "reasoning", part id)
        self._parts = 0

    def start(self) -> list[UIChunk]:
        """The opening chunk: ``start`` with the message id."""
        return [{"type": "start", "messageId": self.message_id}]

    def chunk(self, value: Any) -> list[UIChunk]:
        """The UI chunks for one flow chunk (see the module docstring).

        Raises `InvalidArgumentError` for a chunk it cannot express.
        """
        if isinstance(value, str):
            return self._delta("text", value)
        if not isinstance(value, Mapping) or not isinstance(value.get("type"), str):
            raise InvalidArgumentError(
                "a chat flow sends strings (text) or objects with a 'type' (UI parts)"
            )
        kind: str = value["type"]
        if kind == "reasoning":
            return self._delta("reasoning", _text(value, "text"))
        out = self._close()
        if kind == "tool-call":
            call_id, name = _text(value, "toolCallId"), _text(value, "toolName")
            out.append({"type": "tool-input-start", "toolCallId": call_id, "toolName": name})
            out.append(
                {
                    "type": "tool-input-available",
                    "toolCallId": call_id,
                    "toolName": name,
                    "input": value.get("input"),
                }
            )
        elif kind == "tool-result":
            call_id = _text(value, "toolCallId")
            if "errorText" in value:
                out.append(
                    {"type": "tool-output-error", "toolCallId": call_id,
                     "errorText": _text(value, "errorText")}
                )  # fmt: skip
            else:
                out.append(
                    {"type": "tool-output-available", "toolCallId": call_id,
                     "output": value.get("output")}
                )  # fmt: skip
        elif kind.startswith("data-") or kind in _PASS_THROUGH:
            out.append(dict(value))
        else:
            raise InvalidArgumentError(f"a chat flow cannot send a part of type {kind!r}")
        return out

    def finish(self, result: Any = None) -> list[UIChunk]:
        """Close what is open, then ``finish`` (with ``messageMetadata`` when the
        flow's result is ``{"messageMetadata": ...}``)."""
        out = self._close()
        end: UIChunk = {"type": "finish"}
        if isinstance(result, Mapping) and "messageMetadata" in result:
            end["messageMetadata"] = result["messageMetadata"]
        out.append(end)
        return out

    def error(self, message: str) -> list[UIChunk]:
        """Close what is open, then ``error`` with ``message`` as its text."""
        return [*self._close(), {"type": "error", "errorText": message}]

    def _delta(self, kind: str, text: str) -> list[UIChunk]:
        out: list[UIChunk] = []
        if self._open is None or self._open[0] != kind:
            out = self._close()
            self._parts += 1
            self._open = (kind, f"{kind}-{self._parts}")
            out.append({"type": f"{kind}-start", "id": self._open[1]})
        if text:
            out.append({"type": f"{kind}-delta", "id": self._open[1], "delta": text})
        return out

    def _close(self) -> list[UIChunk]:
        if self._open is None:
            return []
        kind, part_id = self._open
        self._open = None
        return [{"type": f"{kind}-end", "id": part_id}]


def _text(value: Mapping[str, Any], key: str) -> str:
    item = value.get(key)
    if not isinstance(item, str):
        raise InvalidArgumentError(f"a {value.get('type')!r} part needs a string {key!r}")
    return item
