"""A stream writer in its own OS process, for the cross-process tests.

    python writer_proc.py DSN SCHEMA STREAM_ID [--chunks N] [--pause S] [--lease L]
        [--flush-interval F] [--wait-after K] [--no-report] [--until-cancelled]

Writes chunks ``{"i": 0}``, ``{"i": 1}``, ... then the result ``{"n": N}``. Prints
``opened`` once the stream exists, ``flushed <length>`` after each chunk is committed
(unless ``--no-report``), and ``done`` after the result. ``--wait-after K`` reads one
line from stdin after K chunks; ``--chunks 0`` writes until killed or, with
``--until-cancelled``, until another process cancels the stream (then it ends the
stream as cancelled and prints ``cancelled``).
"""

from __future__ import annotations

import argparse
import sys

import anyio
import anyio.to_thread

from stream_gateway_postgres import PostgresStreamManager


def say(line: str) -> None:
    print(line, flush=True)


async def main(args: argparse.Namespace) -> None:
    options = {"lease": args.lease, "flush_interval": args.flush_interval}
    async with PostgresStreamManager(args.dsn, schema=args.schema, **options) as manager:
        writer = await manager.open(args.stream_id, flow="proc")
        say("opened")
        i = 0
        while args.chunks == 0 or i < args.chunks:
            if args.until_cancelled and writer.cancel_requested:
                await writer.cancelled("stopped by request")
                say("cancelled")
                return
            if i == args.wait_after:
                await anyio.to_thread.run_sync(sys.stdin.readline)
            await writer.write({"i": i})
            if args.report:
                await writer.flush()
                say(f"flushed {writer.length}")
            i += 1
            if args.pause:
                await anyio.sleep(args.pause)
        await writer.done({"n": i})
        say("done")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("dsn")
    parser.add_argument("schema")
    parser.add_argument("stream_id")
    parser.add_argument("--chunks", type=int, default=10)
    parser.add_argument("--pause", type=float, default=0.0)
    parser.add_argument("--lease", type=float, default=10.0)
    parser.add_argument("--flush-interval", type=float, default=0.02)
    parser.add_argument("--wait-after", type=int, default=-1)
    parser.add_argument("--no-report", dest="report", action="store_false")
    parser.add_argument("--until-cancelled", action="store_true")
    anyio.run(main, parser.parse_args())
