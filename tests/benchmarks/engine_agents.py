"""The workload bench_engine.py gives every system, and the agent it runs: importable, so worker processes
(``papayya worker tests.benchmarks.engine_agents:noop`` or the benchmark's own) find the same agent the
benchmark submits items to.

Every system gets the same item (a JSON document of ``INPUT_BYTES``) and its handler makes the same
result (a JSON document of ``RESULT_BYTES``); the input is hex text, so no compression makes it smaller.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import papayya

INPUT_BYTES = 1024
RESULT_BYTES = 200
_HEX = "".join(hashlib.sha256(str(n).encode()).hexdigest() for n in range(40))  # 2,560 characters


def _padded(doc: dict[str, Any], size: int) -> dict[str, Any]:
    """``doc`` with a ``text`` field that makes its JSON text exactly ``size`` bytes."""
    room = size - len(json.dumps({**doc, "text": ""}))
    return {**doc, "text": _HEX[:room]}


def item_input(i: int, prefix: str = "item") -> dict[str, Any]:
    """Item ``i``'s input: ``{"id": ..., "text": ...}``, ``INPUT_BYTES`` of JSON."""
    return _padded({"id": f"{prefix}-{i}"}, INPUT_BYTES)


def item_result(item_id: str) -> dict[str, Any]:
    """What a handler returns for an item: ``RESULT_BYTES`` of JSON."""
    return _padded({"id": item_id, "ok": True}, RESULT_BYTES)


@papayya.agent
def noop(item: Any) -> dict[str, Any]:
    """Does no work but make the result: what is left is papayya's own cost per item."""
    return item_result(item.id)
