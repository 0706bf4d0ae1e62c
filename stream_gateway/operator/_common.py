"""Request parsing shared by the operator API's handlers."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from .._errors import InvalidArgumentError

__all__ = ["limit_param", "object_body"]


def object_body(body: Any) -> dict[str, Any]:
    """A JSON body that must be an object (``None``, an empty body, is ``{}``)."""
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise InvalidArgumentError("request body must be a JSON object")
    return body


def limit_param(request: Request, maximum: int, default: int = 50) -> int:
    """The ``limit`` query parameter: 1 to ``maximum``."""
    raw = request.query_params.get("limit")
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw[:7]) <= maximum:
        raise InvalidArgumentError(f"limit must be an integer within 1-{maximum}")
    return int(raw)
