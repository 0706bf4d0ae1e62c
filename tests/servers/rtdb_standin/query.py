"""Queries: ``orderBy`` with ``startAt``/``endAt``/``equalTo``/``limitToFirst``/``limitToLast``.

Ordering follows "How Data is Ordered" in the REST guide:

* by child or ``$value``: ``null``, ``false``, ``true``, numbers (ascending), strings
  (lexicographic), objects; ties are broken by key;
* by ``$key``: keys that parse as 32-bit integers first (numerically), then the other keys
  lexicographically.

Strings are compared by UTF-16 code units, as the Firebase clients do. Query parameter values
are JSON-encoded (``orderBy="$key"&startAt="a"``); range bounds are inclusive.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from .tree import Node, Path, bad_request, get_at, parse_path

QUERY_PARAMS = ("orderBy", "startAt", "endAt", "equalTo", "limitToFirst", "limitToLast")

SortKey = tuple[int, float, bytes]
Primitive = None | bool | int | float | str

_INT32_KEY = re.compile(r"0|-?[1-9][0-9]{0,9}")


def _utf16(text: str) -> bytes:
    return text.encode("utf-16-be", "surrogatepass")


def key_sort_key(key: str) -> SortKey:
    """``$key`` order: 32-bit integer keys first (numerically), then strings."""
    if _INT32_KEY.fullmatch(key):
        number = int(key)
        if -(2**31) <= number < 2**31:
            return (0, number, b"")
    return (1, 0, _utf16(key))


def value_sort_key(value: Node) -> SortKey:
    """Child/``$value`` order: null < false < true < numbers < strings < objects."""
    if value is None:
        return (0, 0, b"")
    if value is False:
        return (1, 0, b"")
    if value is True:
        return (2, 0, b"")
    if isinstance(value, int | float):
        return (3, value, b"")
    if isinstance(value, str):
        return (4, 0, _utf16(value))
    return (5, 0, b"")


@dataclass(frozen=True)
class Query:
    """A parsed query. ``order_by`` is ``"$key"``, ``"$value"`` or a child path."""

    order_by: str
    child_path: Path = ()
    start_at: SortKey | None = None
    end_at: SortKey | None = None
    equal_to: SortKey | None = None
    limit_first: int | None = None
    limit_last: int | None = None

    def index_key(self, key: str, value: Node) -> SortKey:
        """What the range bounds are compared with."""
        if self.order_by == "$key":
            return key_sort_key(key)
        if self.order_by == "$value":
            return value_sort_key(value)
        return value_sort_key(get_at(value, self.child_path))

    def sort_key(self, key: str, value: Node) -> tuple[SortKey, SortKey]:
        return (self.index_key(key, value), key_sort_key(key))

    def matches(self, key: str, value: Node) -> bool:
        index = self.index_key(key, value)
        if self.equal_to is not None and index != self.equal_to:
            return False
        if self.start_at is not None and index < self.start_at:
            return False
        return self.end_at is None or index <= self.end_at


def _decode(params: Mapping[str, str], name: str) -> object:
    try:
        return json.loads(params[name])
    except ValueError:
        raise bad_request(f"{name} must be a valid JSON encoded value") from None


def _bound(params: Mapping[str, str], name: str, order_by: str) -> SortKey | None:
    if name not in params:
        return None
    value = _decode(params, name)
    if isinstance(value, dict | list):
        raise bad_request("Constraint index field must be a JSON primitive")
    if order_by == "$key":
        if not isinstance(value, str):
            raise bad_request(f"{name} must be a string when ordering by $key")
        return key_sort_key(value)
    assert value is None or isinstance(value, bool | int | float | str)
    return value_sort_key(value)


def _limit(params: Mapping[str, str], name: str) -> int | None:
    if name not in params:
        return None
    value = _decode(params, name)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise bad_request(f"{name} must be a positive integer")
    return value


def parse_query(params: Mapping[str, str]) -> Query | None:
    """The query in ``params``, ``None`` when there is none; ``RtdbError`` (400) when invalid."""
    if not any(name in params for name in QUERY_PARAMS):
        return None
    if "orderBy" not in params:
        raise bad_request("orderBy must be defined when other query parameters are defined")
    order_by = _decode(params, "orderBy")
    if not isinstance(order_by, str) or not order_by:
        raise bad_request("orderBy must be a valid JSON encoded path")
    child_path: Path = ()
    if order_by == "$priority":
        raise bad_request('orderBy="$priority" is not supported by the stand-in (no priorities)')
    if order_by not in ("$key", "$value"):
        child_path = parse_path(order_by, what="orderBy")
        if not child_path:
            raise bad_request("orderBy must be a valid JSON encoded path")
    if "limitToFirst" in params and "limitToLast" in params:
        raise bad_request("limitToFirst and limitToLast can't both be set")
    if "equalTo" in params and ("startAt" in params or "endAt" in params):
        raise bad_request("equalTo can't be combined with startAt or endAt")
    return Query(
        order_by=order_by,
        child_path=child_path,
        start_at=_bound(params, "startAt", order_by),
        end_at=_bound(params, "endAt", order_by),
        equal_to=_bound(params, "equalTo", order_by),
        limit_first=_limit(params, "limitToFirst"),
        limit_last=_limit(params, "limitToLast"),
    )


def run_query(value: Node, query: Query) -> Node:
    """The children of ``value`` selected by ``query`` (``None`` when none match).

    A primitive has no children to order, so it is returned unchanged.
    """
    if not isinstance(value, dict):
        return value
    selected = [key for key, child in value.items() if query.matches(key, child)]
    if query.limit_first is not None or query.limit_last is not None:
        selected.sort(key=lambda key: query.sort_key(key, value[key]))
        if query.limit_first is not None:
            selected = selected[: query.limit_first]
        elif query.limit_last is not None:
            selected = selected[-query.limit_last :]
    return {key: value[key] for key in selected} or None
