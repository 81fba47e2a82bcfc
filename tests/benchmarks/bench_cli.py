"""How long the ``papayya`` command takes to its first output, run on demand (not in the test suite):

    python tests/benchmarks/bench_cli.py        # against a throwaway database on the local server

Each line is the median and best of REPEAT fresh processes (wall time from spawn to exit), beside the
floors a command cannot go under: the interpreter starting (``python -c pass``) and, for reads, the same
interpreter importing psycopg, connecting and running one query (what any read must do). The database
holds one tenant with one small run, so the time is the command's own, not its query's.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tests.benchmarks.machine import machine_line, throwaway_database

REPEAT = int(os.environ.get("BENCH_REPEAT", "15"))
ROOT = Path(__file__).resolve().parents[2]
FLOOR_READ = (
    "import psycopg, os\n"
    "with psycopg.connect(os.environ['PAPAYYA_DATABASE_URL']) as c:\n"
    "    c.execute('SELECT count(*) FROM papayya.runs').fetchone()\n"
)


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(median, best) wall milliseconds of REPEAT runs of ``argv``; each must exit 0."""
    took = []
    for _ in range(REPEAT):
        started = time.perf_counter()
        subprocess.run(argv, env=env, cwd=ROOT, check=True, capture_output=True, timeout=60)
        took.append((time.perf_counter() - started) * 1000)
    return statistics.median(took), min(took)


def main() -> None:
    print(machine_line("PostgreSQL server"))
    with throwaway_database() as url:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PAPAYYA_")}
        env.update(PAPAYYA_DATABASE_URL=url, PAPAYYA_PROGRESS="0")
        seed = (
            "import papayya\n"
            "@papayya.agent(name='bench.cli')\n"
            "def f(item):\n    return 'ok'\n"
            "f.map([{'id': str(n)} for n in range(20)], tenant='bench-cli')\n"
        )
        subprocess.run([sys.executable, "-c", seed], env=env, cwd=ROOT, check=True, timeout=120)
        papayya = [sys.executable, "-m", "papayya"]
        cases = [
            ("python -c pass (interpreter start)", [sys.executable, "-c", "pass"]),
            ("papayya --help", [*papayya, "--help"]),
            ("psycopg connect + one query (the floor of a read)", [sys.executable, "-c", FLOOR_READ]),
            ("papayya runs list --limit 1 --json", [*papayya, "runs", "list", "--limit", "1", "--json"]),
            ("papayya runs list --limit 5", [*papayya, "runs", "list", "--limit", "5"]),
            ("papayya tenants show bench-cli", [*papayya, "tenants", "show", "bench-cli"]),
        ]
        print(f"{'command':<55} {'median ms':>10} {'best ms':>10}")
        for label, argv in cases:
            median, best = timed(argv, env)
            print(f"{label:<55} {median:>10.1f} {best:>10.1f}", flush=True)


if __name__ == "__main__":
    main()
