"""``python -m papayya_temporal worker [MODULE:AGENT...] [--concurrency N] [--grace S]``.

A Temporal worker that runs any papayya agent without declaring it (``papayya_temporal.worker``):
Temporal from ``PAPAYYA_TEMPORAL_*``, the store from ``PAPAYYA_DATABASE_URL`` as for every papayya
process. ``MODULE:AGENT`` adds agents that are Temporal activities of your own (``@activity.defn``
above ``@agent``); any other agent needs no declaration. SIGTERM or Ctrl-C stops it gracefully.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from papayya_temporal.worker import DEFAULT_CONCURRENCY


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m papayya_temporal", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    worker = commands.add_parser("worker", help="run a worker for MapItems and any agent")
    worker.add_argument("agents", nargs="*", metavar="MODULE:AGENT", help="agent activities of your own")
    worker.add_argument(
        "--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="activities at once (default 16)"
    )
    worker.add_argument("--grace", type=float, default=30.0, help="seconds attempts get to finish on SIGTERM")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from papayya.cli.worker import load_spec
    from papayya.errors import PapayyaError
    from papayya_temporal.backend import activity_name
    from papayya_temporal.config import TemporalSettings
    from papayya_temporal.worker import serve

    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    try:
        settings = TemporalSettings.from_env()
        agents = [load_spec(spec) for spec in args.agents]
        for agent in agents:
            activity_name(agent)  # one sentence when it is not a Temporal activity
        asyncio.run(serve(settings, activities=agents, concurrency=args.concurrency, grace=args.grace))
    except PapayyaError as exc:
        print(f"papayya_temporal: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    print("papayya_temporal: stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
