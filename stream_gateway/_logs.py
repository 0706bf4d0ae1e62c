"""How log lines name who a stream or an execution belongs to."""

from __future__ import annotations

__all__ = ["owner_tag"]


def owner_tag(owner: str | None) -> str:
    """The first 12 characters of a stored owner (the gateway stores a hash of the
    principal, never the principal), or ``-`` for none: enough to tell owners apart in
    a log and to find them in `stream-gateway streams ls`, whose OWNER column is the
    same prefix."""
    return owner[:12] if owner else "-"
