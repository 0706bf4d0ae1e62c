"""The JSON tree: paths, key validation, value normalisation, server values, ETags, push ids.

Values are stored the way the Realtime Database stores them: objects only (arrays become
objects keyed ``"0"``, ``"1"``, ...), no ``null`` leaves and no empty objects. Writes mutate the
tree in place along the written path only, so a write costs O(depth), not O(tree size).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import math
import re
import secrets
import time
from collections.abc import Iterable, Sequence
from typing import TypeAlias

#: A stored value. ``None`` means "no data here".
Node: TypeAlias = "bool | int | float | str | dict[str, Node] | None"
#: A value as rendered to clients (objects with array-like keys become lists).
OutValue: TypeAlias = "bool | int | float | str | dict[str, OutValue] | list[OutValue] | None"
#: A location, as path segments from the namespace root.
Path: TypeAlias = tuple[str, ...]

MAX_DEPTH = 32
MAX_KEY_BYTES = 768
NULL_ETAG = "null_etag"

_FORBIDDEN_KEY_CHARS = frozenset(".$#[]/") | {chr(c) for c in range(32)} | {chr(127)}
_MAX_SAFE_INT = 2**53
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_ARRAY_INDEX = re.compile(r"0|[1-9][0-9]{0,8}")


class RtdbError(Exception):
    """An error answered the way the real server does: a status and ``{"error": message}``.

    ``body`` replaces the error object when set (a 412 answers with the current value).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        body: OutValue = None,
        has_body: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.body = body
        self.has_body = has_body


def bad_request(message: str) -> RtdbError:
    return RtdbError(400, message)


# --------------------------------------------------------------------------------------------
# Keys and paths


def key_problem(key: str) -> str | None:
    """Why ``key`` is not a valid child name, or ``None`` when it is."""
    if not key:
        return "Key can't be empty"
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        return f"Key is longer than {MAX_KEY_BYTES} bytes"
    if any(ch in _FORBIDDEN_KEY_CHARS for ch in key):
        return "Key can't contain . $ # [ ] / or ASCII control characters"
    return None


def validate_key(key: str) -> None:
    problem = key_problem(key)
    if problem is None:
        return
    if key in (".priority", ".value"):
        raise bad_request(f"Invalid data; {key} (priorities) is not supported by the stand-in")
    raise bad_request(f"Invalid data; couldn't parse key {key!r}. {problem}")


def parse_path(text: str, *, what: str = "path") -> Path:
    """Split a ``/``-separated path (already percent-decoded), dropping empty segments."""
    segs = tuple(seg for seg in text.split("/") if seg)
    for seg in segs:
        if key_problem(seg) is not None:
            raise bad_request(f"Invalid {what}: Invalid token in path")
    if len(segs) > MAX_DEPTH:
        raise bad_request(f"Invalid {what}: path is too long (more than {MAX_DEPTH} levels)")
    return segs


def path_from_segments(segments: Sequence[str]) -> Path:
    """A path from URL segments (each percent-decoded on its own, so ``%2F`` is rejected)."""
    path = tuple(seg for seg in segments if seg)
    if any(key_problem(seg) is not None for seg in path):
        raise bad_request("Invalid path: Invalid token in path")
    if len(path) > MAX_DEPTH:
        raise bad_request(f"Invalid path: path is too long (more than {MAX_DEPTH} levels)")
    return path


def path_str(path: Sequence[str]) -> str:
    return "/" + "/".join(path)


def is_prefix(prefix: Sequence[str], path: Sequence[str]) -> bool:
    return len(prefix) <= len(path) and tuple(path[: len(prefix)]) == tuple(prefix)


def overlapping(paths: Iterable[Path]) -> tuple[Path, Path] | None:
    """Two paths where one is an ancestor of (or equal to) the other, if any."""
    ordered = sorted(paths)
    for first, second in itertools.pairwise(ordered):
        if is_prefix(first, second):
            return first, second
    return None


# --------------------------------------------------------------------------------------------
# Reading and writing the tree


def get_at(root: Node, path: Sequence[str]) -> Node:
    node = root
    for seg in path:
        if not isinstance(node, dict):
            return None
        node = node.get(seg)
    return node


def set_at(root: Node, path: Sequence[str], value: Node) -> Node:
    """Store ``value`` at ``path`` and return the (possibly new) root.

    Writing under a primitive replaces it with an object; writing ``None`` deletes and prunes
    every parent left empty. Only the dictionaries along ``path`` are touched.
    """
    if not path:
        return value
    if value is None and get_at(root, path) is None:
        return root
    if not isinstance(root, dict):
        root = {}
    parents: list[dict[str, Node]] = [root]
    node: dict[str, Node] = root
    for seg in path[:-1]:
        child = node.get(seg)
        if not isinstance(child, dict):
            child = {}
            node[seg] = child
        node = child
        parents.append(node)
    if value is None:
        node.pop(path[-1], None)
        for depth in range(len(parents) - 1, 0, -1):
            if parents[depth]:
                break
            del parents[depth - 1][path[depth - 1]]
    else:
        node[path[-1]] = value
    return root if root else None


def json_equal(a: Node, b: Node) -> bool:
    """Strict structural equality (``True`` is not ``1``)."""
    if a is b:
        return True
    if isinstance(a, dict) or isinstance(b, dict):
        if not (isinstance(a, dict) and isinstance(b, dict)) or len(a) != len(b):
            return False
        return all(key in b and json_equal(val, b[key]) for key, val in a.items())
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b


# --------------------------------------------------------------------------------------------
# Normalising written values (and resolving server values)


def normalize_number(value: int | float) -> int | float:
    """Numbers as the database keeps them: integral doubles read back as integers."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise bad_request("Invalid data; NaN and Infinity are not valid JSON numbers")
        if value.is_integer() and abs(value) <= _MAX_SAFE_INT:
            return int(value)
        return value
    if _INT64_MIN <= value <= _INT64_MAX:
        return value
    return float(value)


def prepare_value(raw: object, current: Node, depth: int, now_ms: int) -> Node:
    """Validate a decoded JSON value and turn it into a stored :data:`Node`.

    ``current`` is the value stored at the same location before the write (for
    ``{".sv": {"increment": n}}``); ``depth`` is the depth of this location from the root.
    """
    if raw is None or isinstance(raw, bool | str):
        return raw
    if isinstance(raw, int | float):
        return normalize_number(raw)
    if isinstance(raw, list):
        raw = {str(index): item for index, item in enumerate(raw)}
    if not isinstance(raw, dict):
        raise bad_request("Invalid data; couldn't parse JSON object, array, or value.")
    if ".sv" in raw:
        return _server_value(raw, current, now_ms)
    if raw and depth >= MAX_DEPTH:
        raise bad_request(f"Invalid data; data is nested deeper than {MAX_DEPTH} levels")
    out: dict[str, Node] = {}
    for key, item in raw.items():
        validate_key(key)
        child_current = current.get(key) if isinstance(current, dict) else None
        value = prepare_value(item, child_current, depth + 1, now_ms)
        if value is not None:
            out[key] = value
    return out or None


def _server_value(raw: dict[str, object], current: Node, now_ms: int) -> Node:
    spec = raw[".sv"]
    if len(raw) != 1:
        raise bad_request("Invalid data; a server value object must only contain '.sv'")
    if spec == "timestamp":
        return now_ms
    if isinstance(spec, dict) and set(spec) == {"increment"}:
        delta = spec["increment"]
        if isinstance(delta, bool) or not isinstance(delta, int | float):
            raise bad_request("Invalid data; increment needs a numeric delta")
        base = current if isinstance(current, int | float) and not isinstance(current, bool) else 0
        total: int | float = base + delta
        if isinstance(total, int) and not _INT64_MIN <= total <= _INT64_MAX:
            total = float(total)
        return normalize_number(total)
    raise bad_request(f"Invalid data; unrecognized server value: {json.dumps(spec)}")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# --------------------------------------------------------------------------------------------
# Rendering, hashing


def to_output(node: Node) -> OutValue:
    """Render a stored value: objects whose keys look like array indexes become lists.

    Follows the documented rule for arrays (all keys are non-negative integers and "more than
    half" of the indexes are present), in the form the Firebase clients use: the largest index
    is less than twice the number of keys. Missing indexes read as ``null``.
    """
    if not isinstance(node, dict):
        return node
    rendered: dict[str, OutValue] = {key: to_output(val) for key, val in node.items()}
    if rendered and all(_ARRAY_INDEX.fullmatch(key) for key in rendered):
        largest = max(int(key) for key in rendered)
        if largest < 2 * len(rendered):
            items: list[OutValue] = [None] * (largest + 1)
            for key, val in rendered.items():
                items[int(key)] = val
            return items
    return rendered


def canonical_json(node: Node) -> str:
    return json.dumps(node, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def etag_of(node: Node) -> str:
    """A stable ETag: base64 SHA-1 of the canonical JSON; ``null_etag`` for no data."""
    if node is None:
        return NULL_ETAG
    digest = hashlib.sha1(canonical_json(node).encode("utf-8"), usedforsecurity=False).digest()
    return base64.b64encode(digest).decode("ascii")


def clean_etag(header: str) -> str:
    """Accept an ETag as sent by lenient clients: surrounding quotes and ``W/`` removed."""
    value = header.strip()
    if value.startswith("W/"):
        value = value[2:]
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return value


# --------------------------------------------------------------------------------------------
# Push ids


PUSH_CHARS = "-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"


class PushIdGenerator:
    """Chronologically ordered 20-character keys, as POST (``push()``) generates them.

    8 characters encode the millisecond timestamp in a 64-character alphabet whose ASCII order
    matches its value order; 12 random characters follow. Within one millisecond the random
    part is incremented by one instead of redrawn, so ids made in the same millisecond still
    sort in creation order.
    """

    def __init__(self) -> None:
        self._last_ms = -1
        self._last_random: list[int] = [0] * 12

    def next_id(self, timestamp_ms: int | None = None) -> str:
        stamp = now_ms() if timestamp_ms is None else timestamp_ms
        if stamp <= self._last_ms:
            self._increment_random()  # never go backwards, even if the clock does
            stamp = self._last_ms
        else:
            self._last_random = [secrets.randbelow(64) for _ in range(12)]
        self._last_ms = stamp
        time_chars = []
        remaining = stamp
        for _ in range(8):
            time_chars.append(PUSH_CHARS[remaining % 64])
            remaining //= 64
        if remaining:
            raise ValueError("timestamp out of range for a push id")
        return "".join(reversed(time_chars)) + "".join(PUSH_CHARS[i] for i in self._last_random)

    def _increment_random(self) -> None:
        for index in range(11, -1, -1):
            if self._last_random[index] < 63:
                self._last_random[index] += 1
                return
            self._last_random[index] = 0
        # All 12 characters wrapped around (2**72 ids in one millisecond): move time forward.
        self._last_ms += 1
