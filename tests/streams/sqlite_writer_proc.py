"""A stream writer in its own OS process, for the SQLite cross-process tests.

    python sqlite_writer_proc.py PATH STREAM_ID [--chunks N] [--pause S] [--lease L]
        [--flush-interval F] [--wait-after K]

Writes chunks ``{"i": 0}``, ``{"i": 1}``, ... then the result ``{"n": N}``. Prints
``opened`` once the stream exists, ``flushed <length>`` after each chunk is committed
(`StreamWriter.flush`), and ``done`` after the result. ``--wait-after K`` reads one
line from stdin after K chunks before going on; ``--chunks 0`` writes until killed.
"""

from __future__ import annotations

import argparse
import sys

import anyio

from stream_gateway.streams import SqliteStreamManager


def say(line: str) -> None:
    print(line, flush=True)


async def main(args: argparse.Namespace) -> None:
    options = {"lease": args.lease, "flush_interval": args.flush_interval}
    async with SqliteStreamManager(args.path, **options) as manager:
        writer = await manager.open(args.stream_id, flow="proc")
        say("opened")
        i = 0
        while args.chunks == 0 or i < args.chunks:
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
    parser.add_argument("path")
    parser.add_argument("stream_id")
    parser.add_argument("--chunks", type=int, default=10)
    parser.add_argument("--pause", type=float, default=0.0)
    parser.add_argument("--lease", type=float, default=10.0)
    parser.add_argument("--flush-interval", type=float, default=0.02)
    parser.add_argument("--wait-after", type=int, default=-1)
    parser.add_argument("--no-report", dest="report", action="store_false")
    anyio.run(main, parser.parse_args())
