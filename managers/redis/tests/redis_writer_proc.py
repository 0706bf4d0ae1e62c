"""A stream writer in its own OS process, for the cross-process tests.

    python redis_writer_proc.py [--chunks N] [--pause S] [--lease L]
        [--flush-interval F] [--until-cancelled] -- URL PREFIX STREAM_ID

Writes chunks ``{"i": 0}``, ``{"i": 1}``, ... then the result ``{"n": N}``. Prints
``opened`` once the stream exists, ``flushed <length>`` after each chunk is committed,
and ``done`` after the result. ``--chunks 0`` writes until killed or cancelled;
``--until-cancelled`` ends with ``writer.cancelled()`` and prints ``cancelled`` as soon
as a cancellation (from any process) reaches the writer.
"""

from __future__ import annotations

import argparse

import anyio

from stream_gateway_redis import RedisStreamManager


def say(line: str) -> None:
    print(line, flush=True)


async def main(args: argparse.Namespace) -> None:
    options = {"lease": args.lease, "flush_interval": args.flush_interval}
    async with RedisStreamManager(args.url, prefix=args.prefix, **options) as manager:
        writer = await manager.open(args.stream_id, flow="proc")
        say("opened")
        i = 0
        while args.chunks == 0 or i < args.chunks:
            if args.until_cancelled and writer.cancel_requested:
                await writer.cancelled("stopped by request")
                say("cancelled")
                return
            await writer.write({"i": i})
            await writer.flush()
            say(f"flushed {writer.length}")
            i += 1
            await anyio.sleep(args.pause)
        await writer.done({"n": i})
        say("done")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("prefix")
    parser.add_argument("stream_id")
    parser.add_argument("--chunks", type=int, default=10)
    parser.add_argument("--pause", type=float, default=0.0)
    parser.add_argument("--lease", type=float, default=10.0)
    parser.add_argument("--flush-interval", type=float, default=0.02)
    parser.add_argument("--until-cancelled", action="store_true")
    anyio.run(main, parser.parse_args())
