"""The same contract on the queue a team already runs, as a platform team meets it: its own Celery app
in its own file, a real ``celery worker`` process that lives through the whole story, the CLI.

A tenant's budget breaks mid-run: the worker parks the rest. The budget is raised and ``papayya
resume`` runs from the command line: the same long-lived worker, which saw the pause, runs the
resumed items (a worker used to keep refusing the run until restarted), and no call is paid twice.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from papayya.testing import FakeProvider
from tests.acceptance.switch_celery import celery_worker, fresh_redis
from tests.acceptance.test_cli import ok_text, papayya

BROKER = "redis://127.0.0.1:6379/11"

APP = textwrap.dedent(
    '''
    """A team's Celery app: papayya installed, one agent task that asks the model once."""

    import os
    import sys

    import openai
    from celery import Celery

    import papayya_celery
    import papayya_openai
    from papayya import agent

    app = Celery("truth", broker=os.environ["CELERY_BROKER_URL"])
    app.conf.update(task_acks_late=True, task_default_queue=os.environ["TRUTH_QUEUE"])
    papayya_celery.install(app)
    client = papayya_openai.instrument(
        openai.OpenAI(base_url=os.environ["TRUTH_FAKE_URL"], api_key="test", max_retries=0)
    )


    @app.task(name="truth.enrich", acks_late=True)
    @agent(name="truth.enrich")
    def enrich(item):
        reply = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": item.id}], max_tokens=5
        )
        return {"answer": reply.choices[0].message.content}


    if __name__ == "__main__":
        tenant, count = sys.argv[1], int(sys.argv[2])
        print(enrich.submit([{"id": f"k{n:02d}"} for n in range(count)], tenant=tenant).run_id)
    '''
)


@pytest.fixture
def team(cli_env: dict[str, str], tmp_path: Path, fake: FakeProvider) -> dict[str, str]:
    """The team's shell: its app file, its broker and queue, papayya on Celery, the fake provider."""
    fresh_redis(BROKER, flush=False)  # the test has a queue of its own
    (tmp_path / "truth_app.py").write_text(APP)
    return {
        **cli_env,
        "CELERY_BROKER_URL": BROKER,
        "TRUTH_QUEUE": f"truth-{uuid.uuid4().hex[:8]}",
        "TRUTH_FAKE_URL": fake.openai_url,
        "PAPAYYA_BACKEND": "celery",
    }


def run_status(env: dict[str, str], run_id: str) -> tuple[str, dict[str, int]]:
    with psycopg.connect(env["PAPAYYA_DATABASE_URL"], autocommit=True) as conn:
        ((status,),) = conn.execute("SELECT status FROM papayya.runs WHERE run_id = %s", (run_id,))
        rows = conn.execute(
            "SELECT status, count(*) FROM papayya.items WHERE run_id = %s GROUP BY 1", (run_id,)
        ).fetchall()
    return str(status), {s: int(n) for s, n in rows}


def wait_for(what: str, check: object, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.1)


@pytest.mark.slow
def test_a_long_lived_celery_worker_runs_a_run_resumed_after_its_budget_paused_it(
    team: dict[str, str], tmp_path: Path, tenant: str, fake: FakeProvider
) -> None:
    total = 12
    # Given a tenant whose budget has room for a few calls, and the team's worker running
    ok_text(papayya(team, "tenants", "add", tenant))
    ok_text(papayya(team, "tenants", "set", tenant, "--price", "openai:gpt-4o-mini=1000/1000"))
    ok_text(papayya(team, "tenants", "set", tenant, "--budget", "0.05"))
    with celery_worker("truth_app", team, tmp_path, tmp_path / "worker.log"):
        submitted = subprocess.run(
            [sys.executable, "truth_app.py", tenant, str(total)],
            env=team,
            cwd=tmp_path,
            capture_output=True,
            timeout=120,
            check=True,
        )
        run_id = submitted.stdout.decode().split()[-1]
        # When the budget breaks, the worker pauses the run and parks what is left
        wait_for("the run paused", lambda: run_status(team, run_id)[0] == "paused")
        wait_for("nothing running", lambda: run_status(team, run_id)[1].get("running", 0) == 0)
        paid_before = fake.count
        assert 0 < paid_before < total
        # and, after the budget is raised, the run is resumed from the command line
        ok_text(papayya(team, "tenants", "set", tenant, "--budget", "100"))
        out = ok_text(papayya(team, "resume", run_id))
    # Then the same worker ran every resumed item, and each item's call was paid once
    assert f"succeeded {total}, degraded 0, failed 0 of {total} items" in out, out
    assert run_status(team, run_id) == ("completed", {"succeeded": total})
    assert fake.count == total
    assert len({b.idempotency_key for b in fake.bill}) == total
