"""The agent bench_engine.py runs: importable, so ``papayya worker tests.benchmarks.engine_agents:noop``
processes find the same agent the benchmark submits items to."""

from __future__ import annotations

from typing import Any

import papayya


@papayya.agent
def noop(item: Any) -> dict[str, bool]:
    """Does nothing: what is left is papayya's own cost per item."""
    return {"ok": True}
