"""How long the ``papayya`` command takes to its first output, run on demand (not in the test suite):

    python tests/benchmarks/bench_cli.py [--smoke]  # a throwaway database on BENCH_SERVER_URL or 127.0.0.1
    BENCH_CLI_BEFORE=/tmp/old/papayya_core python tests/benchmarks/bench_cli.py   # and an older tree

Each line is the median and best of REPEAT fresh processes (wall time from spawn to exit), beside the
floors a command cannot go under: the interpreter starting (``python -c pass``) and, for reads, the same
interpreter importing psycopg, connecting and running one query (what any read must do). The database
holds one tenant with one small run, so the time is the command's own, not its query's. The cases take
turns (one process of each per round), so a machine busy with other work slows every line alike.

``BENCH_CLI_BEFORE`` names the ``papayya_core`` folder of another checkout (e.g. ``git archive OLD
papayya_core | tar -x -C /tmp/old``): its commands are timed too, as "before" lines, on the same
database in the same rounds. ``--smoke`` runs each case once (CI: it still runs; the figures mean nothing).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: the tests package is under ROOT
    sys.path.insert(0, str(ROOT))

from tests.benchmarks.machine import machine_line, throwaway_database  # noqa: E402

REPEAT = int(os.environ.get("BENCH_REPEAT", "15"))
FLOOR_READ = (
    "import psycopg, os\n"
    "with psycopg.connect(os.environ['PAPAYYA_DATABASE_URL']) as c:\n"
    "    c.execute('SELECT count(*) FROM papayya.runs').fetchone()\n"
)


def once(argv: list[str], env: dict[str, str]) -> float:
    """Wall milliseconds of one run of ``argv``, which must exit 0."""
    started = time.perf_counter()
    subprocess.run(argv, env=env, cwd=ROOT, check=True, capture_output=True, timeout=60)
    return (time.perf_counter() - started) * 1000


def main() -> None:
    global REPEAT
    parser = argparse.ArgumentParser(description="How long the papayya command takes to its first output.")
    parser.add_argument("--smoke", action="store_true", help="each case once (CI): figures meaningless")
    smoke = parser.parse_args().smoke
    if smoke:
        REPEAT = 1
    print(machine_line("PostgreSQL server") + ("; SMOKE RUN: the figures mean nothing" if smoke else ""))
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
        commands = [
            ("papayya --help", ["--help"]),
            ("papayya runs list --limit 1 --json", ["runs", "list", "--limit", "1", "--json"]),
            ("papayya runs list --limit 5", ["runs", "list", "--limit", "5"]),
            ("papayya tenants show bench-cli", ["tenants", "show", "bench-cli"]),
        ]
        cases: list[tuple[str, list[str], dict[str, str]]] = [
            ("python -c pass (interpreter start)", [sys.executable, "-c", "pass"], env),
            ("psycopg connect + one query (the floor of a read)", [sys.executable, "-c", FLOOR_READ], env),
            *((label, [*papayya, *args], env) for label, args in commands),
        ]
        before = os.environ.get("BENCH_CLI_BEFORE")
        if before:
            old = {**env, "PYTHONPATH": before}  # ahead of the editable install's finder
            cases += [(f"before: {label}", [*papayya, *args], old) for label, args in commands]
        took: dict[str, list[float]] = {label: [] for label, _, _ in cases}
        for _ in range(REPEAT):
            for label, argv, case_env in cases:
                took[label].append(once(argv, case_env))
        print(f"{'command':<55} {'median ms':>10} {'best ms':>10}")
        for label, times in took.items():
            print(f"{label:<55} {statistics.median(times):>10.1f} {min(times):>10.1f}", flush=True)


if __name__ == "__main__":
    main()
