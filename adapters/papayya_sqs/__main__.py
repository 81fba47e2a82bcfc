"""``python -m papayya_sqs MODULE:AGENT... [--queue-url URL] [--concurrency N] [--burst]``: a consumer.

``python -m papayya_sqs --any-agent`` runs any agent without declaring it: each message's agent is the
one its run was started with, found by name or imported from the run's module where that cannot start
a batch again (start the consumer where that code is importable). The team's own messages (no papayya
item id) still need an agent named on the command line: ``--any-agent MODULE:AGENT``.

The queue and SQS endpoint come from ``PAPAYYA_SQS_*`` (``--queue-url`` wins); the store from
``PAPAYYA_DATABASE_URL`` as for every papayya process. SIGTERM or Ctrl-C drains it.
"""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m papayya_sqs", description=__doc__.splitlines()[0])
    parser.add_argument("agents", nargs="*", metavar="MODULE:AGENT")
    parser.add_argument(
        "--any-agent",
        action="store_true",
        help="also run any other agent, imported from where its run was started",
    )
    parser.add_argument("--queue-url", default=None, help="default: PAPAYYA_SQS_QUEUE_URL")
    parser.add_argument("--concurrency", type=int, default=None, help="items at once (default 10)")
    parser.add_argument("--wait-seconds", type=int, default=None, help="long-poll wait, 0-20 (default 20)")
    parser.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    parser.add_argument("--grace", type=float, default=30.0, help="seconds items get to finish on SIGTERM")
    args = parser.parse_args(argv)
    if not args.agents and not args.any_agent:
        parser.error("name the agents to serve (MODULE:AGENT), or serve any agent with --any-agent")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from papayya.cli.worker import load_spec
    from papayya.errors import PapayyaError
    from papayya_sqs.consumer import Consumer

    try:
        agents = [load_spec(spec) for spec in args.agents]
        consumer = Consumer(
            args.queue_url,
            agent=agents or None,
            any_agent=args.any_agent,
            concurrency=args.concurrency,
            wait_seconds=args.wait_seconds,
        )
        print(f"papayya_sqs: consuming {consumer.queue.url} for {consumer.serving}", file=sys.stderr)
        stats = consumer.run(burst=args.burst, grace=args.grace)
    except PapayyaError as exc:
        print(f"papayya_sqs: {exc}", file=sys.stderr)
        return 2
    print(f"papayya_sqs: stopped; {stats}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
