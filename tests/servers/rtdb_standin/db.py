"""The server state: one tree per namespace, listeners, test rules, revoked tokens, counters."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .hub import Hub, WriteOp
from .tree import Node, Path, PushIdGenerator, get_at, is_prefix, json_equal, set_at

ADMIN_TOKEN = "owner"
COUNTED_METHODS = ("GET", "PUT", "PATCH", "POST", "DELETE")


@dataclass
class Stats:
    """Request counters for benchmarks: REST requests by method, and stream opens."""

    requests: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTED_METHODS, 0))
    stream_opens: int = 0
    writes_applied: int = 0

    def count(self, method: str) -> None:
        if method in self.requests:
            self.requests[method] += 1

    def as_json(self, open_streams: int) -> dict[str, object]:
        return {
            "requests": dict(self.requests),
            "writes": sum(self.requests[m] for m in ("PUT", "PATCH", "POST", "DELETE")),
            "writes_applied": self.writes_applied,
            "stream_opens": self.stream_opens,
            "open_streams": open_streams,
        }


class Database:
    def __init__(self, namespaces: dict[str, Node] | None = None) -> None:
        self.roots: dict[str, Node] = dict(namespaces or {})
        self.hub = Hub()
        self.push_ids = PushIdGenerator()
        self.deny: list[Path] = []
        self.revoked: set[str] = set()
        self.stats = Stats()

    def root(self, ns: str) -> Node:
        return self.roots.get(ns)

    def denied(self, path: Path, admin: bool) -> bool:
        """Test rules: a path is denied when it is at, below or above a denied prefix.

        (Reading or writing an ancestor would expose or overwrite the denied data.) The admin
        token bypasses rules, as it does on the real server.
        """
        if admin:
            return False
        return any(is_prefix(rule, path) or is_prefix(path, rule) for rule in self.deny)

    def apply(self, ns: str, write_path: Path, ops: Sequence[WriteOp], *, patch: bool) -> None:
        """Apply disjoint ``ops`` atomically and queue the resulting events."""
        root = self.roots.get(ns)
        changed = [op for op in ops if not json_equal(get_at(root, op.path), op.value)]
        self.stats.writes_applied += 1
        if not changed:
            return
        deliver = self.hub.plan(ns, write_path, changed, root, patch=patch)
        for op in changed:
            root = set_at(root, op.path, op.value)
        if root is None:
            self.roots.pop(ns, None)
        else:
            self.roots[ns] = root
        deliver(root)

    def reset(self) -> None:
        """Wipe every namespace (listeners see ``null``), the rules, revoked tokens, counters."""
        for ns in list(self.roots):
            self.apply(ns, (), [WriteOp((), None)], patch=False)
        self.roots.clear()
        self.deny.clear()
        self.revoked.clear()
        self.stats = Stats()
