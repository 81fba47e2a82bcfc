"""The invariant checker's Temporal worker: papayya's ready worker (``python -m papayya_temporal worker``)
in a process that has loaded the checker's agent, as a team starts it where its agent's code is
importable::

    python -m tests.reliability.checker_temporal worker --concurrency 8 --grace 5

The agent is not a Temporal activity: the checker's runs name the generic activity ``papayya.run_item``,
which finds the agent of each item's run by name in this process (``CHECKER_AGENT``). Temporal and the
store come from ``PAPAYYA_TEMPORAL_*`` and ``PAPAYYA_DATABASE_URL``.
"""

from __future__ import annotations

import sys

from papayya_temporal.__main__ import main
from tests.reliability import checker_agent

__all__ = ["checker_agent", "main"]

if __name__ == "__main__":
    sys.exit(main())
