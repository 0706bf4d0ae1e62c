"""`Codec`: one type's validation, JSON encoding and decoding, and JSON Schema.

`Flow` (input, output, chunks) and `DurableFlow` (input, output, step results,
interrupt and signal payloads) all go through it, so a value is validated and
turned into JSON the same way wherever it crosses a boundary.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from ._errors import InvalidArgumentError
from ._json import JsonValue, dumps, loads

__all__ = ["Codec"]


class Codec:
    """Values of ``schema`` (anything pydantic validates; ``None``: any JSON)."""

    __slots__ = ("adapter",)

    def __init__(self, schema: Any = None) -> None:
        self.adapter: TypeAdapter[Any] | None = (
            TypeAdapter[Any](schema) if schema is not None else None
        )

    @property
    def typed(self) -> bool:
        """Whether values are validated (a schema was given)."""
        return self.adapter is not None

    def validate(self, value: Any, what: str) -> Any:
        """``value`` validated; `InvalidArgumentError` naming ``what`` with pydantic's
        errors (without the input or exception objects: JSON, echoing nothing)."""
        if self.adapter is None:
            return value
        try:
            return self.adapter.validate_python(value)
        except ValidationError as exc:
            raise InvalidArgumentError(
                f"invalid {what}",
                details=exc.errors(include_url=False, include_context=False, include_input=False),
            ) from None

    def to_json(self, value: Any) -> JsonValue:
        """``value`` validated and dumped to JSON-able Python (pydantic models too).

        Raises pydantic's `ValidationError` when it does not fit."""
        if self.adapter is not None:
            return self.adapter.dump_python(self.adapter.validate_python(value), mode="json")
        if isinstance(value, BaseModel):
            return value.model_dump(mode="json")
        return value

    def encode(self, value: Any) -> bytes:
        """``value`` as compact JSON bytes; `ValidationError` or `InvalidArgumentError`
        (not JSON) when it does not fit."""
        return dumps(self.to_json(value))

    def decode(self, raw: str | bytes | None) -> Any:
        """JSON text back to a value of the type (``None`` text: ``None``)."""
        value = loads(raw) if raw is not None else None
        return self.adapter.validate_python(value) if self.adapter is not None else value

    def json_schema(self) -> Any:
        """The JSON Schema (``None`` for any JSON)."""
        return self.adapter.json_schema() if self.adapter is not None else None
