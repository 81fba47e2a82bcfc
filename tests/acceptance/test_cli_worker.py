"""`papayya worker` and `agent.submit()` as a user runs them: submit returns at once, workers anywhere
drain the run, SIGTERM stops a worker without losing an item, and `runs show --watch` follows it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psycopg

from tests.acceptance.test_cli import assert_one_sentence, ok_json, ok_text, papayya

AGENTS = textwrap.dedent(
    """
    import sys, time
    from papayya import agent

    @agent
    def enrich(item):
        time.sleep(item.input.get("sleep", 0))
        return {"id": item.id, "words": len(item.input["text"].split())}

    if __name__ == "__main__":
        n, tenant, sleep = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
        handle = enrich.submit([{"id": f"d{i:03d}", "text": "a b c", "sleep": sleep} for i in range(n)],
                               tenant=tenant)
        print(handle.run_id)
    """
)


def _submit(env: dict[str, str], cwd: Path, n: int, tenant: str, sleep: float = 0.0) -> str:
    (cwd / "agents.py").write_text(AGENTS)
    proc = subprocess.run(
        [sys.executable, "agents.py", str(n), tenant, str(sleep)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return proc.stdout.strip()


def _statuses(url: str, run_id: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return dict(
            conn.execute(
                "SELECT status, count(*) FROM papayya.items WHERE run_id = %s GROUP BY status", (run_id,)
            ).fetchall()
        )


def _worker(env: dict[str, str], cwd: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "papayya", "worker", "agents:enrich", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_submit_returns_at_once_and_a_burst_worker_drains_the_run(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    # Given 40 items submitted: recorded and queued, nothing run yet
    run_id = _submit(cli_env, tmp_path, 40, "acme")
    shown = ok_json(papayya(cli_env, "runs", "show", run_id, "--json"))
    assert shown["status"] == "running"
    assert _statuses(cli_env["PAPAYYA_DATABASE_URL"], run_id) == {"queued": 40}

    # When a worker drains the queue
    worker = _worker(cli_env, tmp_path, "--burst", "-c", "4")
    _, err = worker.communicate(timeout=120)

    # Then it exits by itself once the queue is empty, every item succeeded, and the run completed
    assert worker.returncode == 0, err
    assert "serving agents.enrich with 4 at once" in err
    assert "40 attempt(s) concluded" in err
    assert _statuses(cli_env["PAPAYYA_DATABASE_URL"], run_id) == {"succeeded": 40}
    watched = papayya(cli_env, "runs", "show", run_id, "--watch", "--interval", "0.2")
    assert watched[0] == 0, watched[2]
    assert "status    completed" in watched[1] or "completed" in watched[1]
    shown = ok_json(papayya(cli_env, "runs", "show", run_id, "--json"))
    assert shown["status"] == "completed"
    assert shown["counts"]["succeeded"] == 40


def test_sigterm_finishes_items_in_flight_and_gives_the_rest_back(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    url = cli_env["PAPAYYA_DATABASE_URL"]
    # Given a worker busy with slow items
    run_id = _submit(cli_env, tmp_path, 30, "acme", sleep=0.3)
    worker = _worker(cli_env, tmp_path, "-c", "2", "--grace", "20")
    deadline = time.monotonic() + 60
    while _statuses(url, run_id).get("succeeded", 0) < 2:
        assert worker.poll() is None, worker.communicate()[1]
        assert time.monotonic() < deadline, "the worker made no progress"
        time.sleep(0.05)

    # When it is told to stop
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=60)

    # Then it finished what it had started, gave nothing up half-done, and left the rest queued
    assert worker.returncode == 0, err
    assert "stopping" in err
    statuses = _statuses(url, run_id)
    assert set(statuses) <= {"succeeded", "queued"}, statuses
    assert sum(statuses.values()) == 30
    assert statuses["queued"] > 0

    # And a later worker picks up exactly the rest
    again = _worker(cli_env, tmp_path, "--burst", "-c", "8")
    _, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert _statuses(url, run_id) == {"succeeded": 30}


def test_a_worker_for_an_agent_that_is_not_there_is_one_sentence(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "agents.py").write_text(AGENTS)
    missing = papayya(cli_env, "worker", "nosuchmodule:enrich")
    assert_one_sentence(missing, "Cannot import 'nosuchmodule'")
    malformed = papayya(cli_env, "worker", "agents.enrich")
    assert_one_sentence(malformed, "is not MODULE:AGENT")


def test_a_tenant_running_cap_is_set_shown_and_removed(cli_env: dict[str, str]) -> None:
    ok_text(papayya(cli_env, "tenants", "add", "capped"))
    assert "at most 3 items running at once" in ok_text(
        papayya(cli_env, "tenants", "set", "capped", "--max-running", "3")
    )
    assert ok_json(papayya(cli_env, "tenants", "show", "capped", "--json"))["max_running"] == 3
    assert "running cap" in ok_text(papayya(cli_env, "tenants", "show", "capped"))
    ok_text(papayya(cli_env, "tenants", "set", "capped", "--no-max-running"))
    assert json.loads(papayya(cli_env, "tenants", "show", "capped", "--json")[1])["max_running"] is None
    both = papayya(cli_env, "tenants", "set", "capped", "--max-running", "2", "--no-max-running")
    assert_one_sentence(both, "not both")
