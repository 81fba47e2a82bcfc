"""The README's first command: the tenant batch runs and its summary names the injected problems."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_example(
    database_url: str,
    cwd: Path,
    python: str = sys.executable,
    extra_env: dict[str, str] | None = None,
    args: list[str] | None = None,
) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAPAYYA_", "OPENAI_"))}
    env["PAPAYYA_DATABASE_URL"] = database_url
    env.update(extra_env or {})
    proc = subprocess.run(
        [python, str(ROOT / "examples" / "tenant_batch.py"), *(args or [])],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    return proc.stdout


def check_summary(out: str) -> None:
    assert "SIMULATED provider" in out
    for tenant, total in (("acme", 500), ("globex", 400), ("initech", 300)):
        block = out.split(f"tenant {tenant}")[1].split("\n\n", maxsplit=1)[0]
        counts = re.search(r"items\s+([\d,]+): ([\d,]+) succeeded, ([\d,]+) degraded, ([\d,]+) failed", block)
        assert counts, block
        n, ok, degraded, failed = (int(g.replace(",", "")) for g in counts.groups())
        assert n == total == ok + degraded + failed
        assert degraded > 0
        assert re.search(r"cost\s+\$0\.\d{6} this run", block)
    # every injected problem is named
    for problem in (
        "tool_returned_none (lookup)",
        "retrieval_empty",
        "swallowed_exception",
        "schema.extra_field (compnay_size)",
        "llm_stop_reason (length)",
        "KeyError <str> in tenant_batch.py:parse",
    ):
        assert problem in out, problem


LINE = re.compile(r"items\s+([\d,]+): ([\d,]+) succeeded, ([\d,]+) degraded, ([\d,]+) failed")
COST = re.compile(r"cost\s+\$(\d+\.\d+) this run")


def per_tenant(out: str) -> dict[str, tuple[int, int, int, str]]:
    """(succeeded, degraded, failed, cost) per tenant, from the example's summary."""
    found = {}
    for tenant in ("acme", "globex", "initech"):
        block = out.split(f"tenant {tenant}")[1].split("\n\n", maxsplit=1)[0]
        counts, cost = LINE.search(block), COST.search(block)
        assert counts, block
        assert cost, block
        _, ok, degraded, failed = (int(g.replace(",", "")) for g in counts.groups())
        found[tenant] = (ok, degraded, failed, cost.group(1))
    return found


@pytest.mark.slow
def test_the_tenant_batch_names_every_injected_problem(database_url: str, tmp_path: Path) -> None:
    check_summary(run_example(database_url, tmp_path))
