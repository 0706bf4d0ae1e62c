"""``stream-gateway-worker``: run durable flows in a process of their own.

```
stream-gateway-worker --db .data/durable.sqlite3 --flows myapp.flows:FLOWS
stream-gateway-worker --db postgresql://app@db/app --flows myapp.flows:FLOWS
stream-gateway-worker --db firestore://my-project --flows myapp.flows:FLOWS
```

``--db`` is a SQLite path or a store URL (`stream_gateway.stores`: the same schemes as
the ``stream-gateway`` command line's ``--store``).

``--flows`` names ``module:attr``: a `DurableFlow`, a list of them, or a
`DurableEngine` (whose store is then used unless ``--db`` is given). SIGINT/SIGTERM
stop claiming and drain running executions for ``--grace`` seconds.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import anyio

from .._errors import InvalidArgumentError
from ..stores import open_durable_store, parse_store_url
from .definition import DurableFlow
from .engine import DurableEngine
from .store import DurableStore

__all__ = ["load_engine", "main"]


def load_engine(spec: str, db: str | None, synchronous: str = "FULL") -> DurableEngine:
    """Import ``module:attr`` and make the engine it describes."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise SystemExit(f"--flows must be module:attr, not {spec!r}")
    target: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        target = getattr(target, part)
    store: DurableStore | None
    if db is None:
        store = None
    else:
        try:
            url = parse_store_url(db)
            if url.scheme == "sqlite":
                url = replace(url, options={"synchronous": synchronous, **url.options})
            store = open_durable_store(url)
        except InvalidArgumentError as exc:
            raise SystemExit(f"--db: {exc.message}") from None
    if isinstance(target, DurableEngine):
        if store is not None:
            target.store = store
        return target
    flows = [target] if isinstance(target, DurableFlow) else list(target)
    return DurableEngine(flows, store=store)


async def _serve(engine: DurableEngine, options: argparse.Namespace) -> None:
    async with engine:
        worker = engine.worker(
            worker_id=options.worker_id,
            concurrency=options.concurrency,
            poll_interval=options.poll_interval,
            lease=options.lease,
            grace=options.grace,
        )
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with worker:
                if options.ready:
                    print("ready", flush=True)
                async for _ in signals:
                    logging.getLogger("stream_gateway.durable").info("shutting down")
                    break


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``stream-gateway-worker`` console script."""
    parser = argparse.ArgumentParser(prog="stream-gateway-worker", description=__doc__)
    parser.add_argument("--flows", required=True, help="module:attr of flows or an engine")
    parser.add_argument(
        "--db", help="SQLite file or store URL, e.g. postgresql://... or firestore://project"
    )
    parser.add_argument("--synchronous", default="FULL", choices=["FULL", "NORMAL", "EXTRA"])
    parser.add_argument("--worker-id", help="stable id: a restart takes back its own leases")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--poll-interval", type=float, default=0.5)
    parser.add_argument("--lease", type=float, default=30.0)
    parser.add_argument("--grace", type=float, default=10.0)
    parser.add_argument("--ready", action="store_true", help="print 'ready' once serving")
    parser.add_argument("--log-level", default="INFO")
    options = parser.parse_args(argv)
    logging.basicConfig(
        level=options.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    sys.path.insert(0, "")
    engine = load_engine(options.flows, options.db, options.synchronous)
    anyio.run(_serve, engine, options)


if __name__ == "__main__":
    main()
