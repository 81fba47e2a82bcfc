"""What a CLI read loads: ``papayya runs list`` answers from the store without importing pydantic, the
engine (its asyncio worker, the lifecycle) or cryptography, so it starts in little more than the time
the interpreter, psycopg and one query take (tests/benchmarks/bench_cli.py measures it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import papayya
from papayya.runtime import Runtime

# Modules a read must not load: the prefix of each name, so a package's submodules count too.
HEAVY = (
    "pydantic",
    "pydantic_core",
    "pydantic_settings",
    "cryptography",
    "papayya.engine",
    "papayya.execute",
)


@papayya.agent(name="tests.cli_imports")
def noop(item: papayya.Item) -> str:
    return "ok"


def loaded_by(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str, list[str]]:
    """Run ``papayya ARGS`` in a fresh interpreter through papayya.cli.main: its exit code, its stdout,
    and the heavy modules it loaded."""
    probe = (
        "import contextlib, io, json, sys\n"
        "from papayya.cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        f"    code = main({args!r})\n"
        f"heavy = sorted(m for m in sys.modules if m.startswith({HEAVY!r}))\n"
        "print(json.dumps({'code': code, 'out': out.getvalue(), 'heavy': heavy}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return report["code"], report["out"], report["heavy"]


def test_runs_list_loads_no_pydantic_no_engine_and_no_cryptography(
    rt: Runtime, tenant: str, database_url: str, tmp_path: Path
) -> None:
    # Given a run in the store
    noop.map([{"id": "a"}, {"id": "b"}], tenant=tenant)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAPAYYA_")}
    env.update(PAPAYYA_DATABASE_URL=database_url, PAPAYYA_PROGRESS="0", COLUMNS="200")
    for args in (["runs", "list", "--limit", "5", "--json"], ["runs", "list", "--limit", "5"]):
        # When `papayya runs list` reads it
        code, out, heavy = loaded_by(args, env, tmp_path)
        # Then it answers, having loaded none of them
        assert code == 0, out
        assert "tests.cli_imports" in out, out
        assert heavy == [], f"papayya {' '.join(args)} loaded {heavy}"


def test_other_reads_that_build_no_tenant_record_load_no_pydantic_either(
    rt: Runtime, tenant: str, database_url: str, tmp_path: Path
) -> None:
    noop.map([{"id": "a"}], tenant=tenant)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAPAYYA_")}
    env.update(PAPAYYA_DATABASE_URL=database_url, PAPAYYA_PROGRESS="0")
    for args in (["tenants", "list", "--json"], ["failures", "--json"], ["costs", "--json"]):
        code, out, heavy = loaded_by(args, env, tmp_path)
        assert code == 0, out
        assert heavy == [], f"papayya {' '.join(args)} loaded {heavy}"
