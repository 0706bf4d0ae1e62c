"""``stream-gateway``: see and act on streams, durable executions and schedules in a store.

```
stream-gateway streams ls --store .data/streams.db
stream-gateway streams tail <id> --offset 40
stream-gateway flows detail <id> --store .data/durable.sqlite3 --json
stream-gateway worker --flows myapp.flows:FLOWS
```

Built on Click (the ``cli`` extra: ``pip install 'stream-gateway[cli]'``). The guide is
``docs/cli.md``; ``stream-gateway --help`` and ``stream-gateway <group> <command>
--help`` tell the rest.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]

_MISSING_CLICK = (
    "stream-gateway: the command line needs Click, which is not installed.\n"
    "Install it with the cli extra:  pip install 'stream-gateway[cli]'\n"
)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``stream-gateway`` console script."""
    try:
        import click  # noqa: F401 - only to tell what is missing
    except ImportError:
        sys.stderr.write(_MISSING_CLICK)
        raise SystemExit(1) from None
    from ._app import cli

    cli.main(args=None if argv is None else list(argv), prog_name="stream-gateway")
