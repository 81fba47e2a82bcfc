"""Replay, resume and generic workers never execute a user's script again.

A user decorates a function and runs ``python script.py``. Later, ``papayya replay``, ``papayya
resume``, a generic worker or the script itself must find that agent without running the script's
batch a second time: an unguarded ``enrich.map(...)`` at the top of a 10,000-item script would
otherwise be started (and paid for) again by the very command meant to fix one item.

Each script here logs every batch start to ``starts.log`` and every paid model call to ``calls.log``,
so the tests count what really ran, not what papayya says ran.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import pytest

from tests.acceptance import switch_celery
from tests.acceptance.switch_celery import fresh_redis
from tests.acceptance.test_cli import assert_one_sentence, ok_json, ok_text, papayya
from tests.acceptance.test_cli_budgets import run_batch

SCRIPT = '''
"""A user's five-item batch: each item asks the model once; item i3 breaks after its call."""

import os
import sys
import threading
from pathlib import Path

import papayya
from papayya import agent, run

HERE = Path(__file__).parent
_lock = threading.Lock()


def log(name, line):
    with _lock, (HERE / name).open("a") as out:
        out.write(line + "\\n")


def fake_llm(*, prompt):
    log("calls.log", prompt)
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 20, "total_tokens": 32},
    }


@agent
def enrich(item):
    reply = run.llm("answer", provider="openai", model="gpt-4o-mini", max_tokens=20)(
        fake_llm, prompt=f"answer {item.id}"
    )
    if item.id == "i3" and not os.environ.get("BATCH_FIXED"):
        raise ValueError("cannot parse the answer")
    return {"text": reply["choices"][0]["message"]["content"]}


def batch():
    log("starts.log", "batch")
    budget = os.environ.get("BATCH_BUDGET")
    result = enrich.map([{"id": f"i{n}"} for n in range(5)], tenant=sys.argv[1], budget_usd=budget)
    print("run", result.run_id, result.status)
    if os.environ.get("BATCH_REPLAY_HERE"):
        again = papayya.replay(run=result.run_id, outcome="failed")
        print("replayed", again.run_id, again.counts)


'''

UNGUARDED = "batch()\n"
GUARDED = 'if __name__ == "__main__":\n    batch()\n'
BATCH_LINE = f"line {(SCRIPT + UNGUARDED).splitlines().index('batch()') + 1}"


def write_script(tmp_path: Path, tail: str) -> Path:
    script = tmp_path / "project" / "batch.py"
    script.parent.mkdir(exist_ok=True)
    script.write_text(SCRIPT + tail, encoding="utf-8")
    return script


def lines(script: Path, name: str) -> list[str]:
    path = script.with_name(name)
    return path.read_text().splitlines() if path.exists() else []


def runs_of(env: dict[str, str], tenant: str) -> list[dict[str, object]]:
    rows = ok_json(papayya(env, "runs", "list", "--tenant", tenant, "--json"))
    assert isinstance(rows, list)
    return rows


def item_id(env: dict[str, str], run_id: str, key: str) -> str:
    listing = ok_json(papayya(env, "items", "list", run_id, "--json"))
    (row,) = [i for i in listing["items"] if i["key"] == key]
    return str(row["item_id"])


def first_run(env: dict[str, str], script: Path, tenant: str, **extra: str) -> str:
    printed = run_batch({**env, **extra}, script, tenant)
    words = printed.split()
    return words[words.index("run") + 1]


def test_replay_of_an_item_from_an_unguarded_script_refuses_and_runs_nothing(
    cli_env: dict[str, str], tmp_path: Path, tenant: str
) -> None:
    # Given a script whose batch runs at its top level, run once: 5 items, 5 paid calls.
    script = write_script(tmp_path, UNGUARDED)
    run_id = first_run(cli_env, script, tenant)
    assert (len(lines(script, "starts.log")), len(lines(script, "calls.log"))) == (1, 5)
    # When the user replays the failed item from the command line,
    result = papayya(cli_env, "replay", "--item", item_id(cli_env, run_id, "i3"))
    # then papayya refuses in one sentence naming the file, the line and the way out,
    assert_one_sentence(result, str(script), BATCH_LINE, '__name__ == "__main__"', "enrich.replay(")
    # and nothing ran again: no new run, no batch start, no paid call.
    assert len(runs_of(cli_env, tenant)) == 1
    assert (len(lines(script, "starts.log")), len(lines(script, "calls.log"))) == (1, 5)


def test_resume_of_a_run_from_an_unguarded_script_refuses_and_runs_nothing(
    cli_env: dict[str, str], tmp_path: Path, tenant: str
) -> None:
    # Given an unguarded script whose run paused at its first call (a $0 run budget).
    script = write_script(tmp_path, UNGUARDED)
    run_id = first_run(cli_env, script, tenant, BATCH_BUDGET="0")
    (row,) = runs_of(cli_env, tenant)
    assert row["status"] == "paused"
    assert lines(script, "calls.log") == []
    ok_text(papayya(cli_env, "runs", "set", run_id, "--budget", "1"))
    # When the user resumes it from the command line, papayya refuses: importing the script would
    # start a second batch of 5 items.
    assert_one_sentence(papayya(cli_env, "resume", run_id), str(script), BATCH_LINE, "enrich.resume(")
    assert len(runs_of(cli_env, tenant)) == 1
    assert (len(lines(script, "starts.log")), len(lines(script, "calls.log"))) == (1, 0)
    (row,) = runs_of(cli_env, tenant)
    assert row["status"] == "paused"


GENERIC_WORKER = """
import sys
from uuid import UUID

import papayya
from papayya import control
from papayya.errors import AgentNotImportable

try:
    agent = control.agent_of_run(UUID(sys.argv[1]), sys.argv[2])
except AgentNotImportable as exc:
    print("refused:", exc.message)
else:
    print("found:", agent.name)
"""


def test_a_generic_worker_never_imports_an_unguarded_script(
    cli_env: dict[str, str], tmp_path: Path, tenant: str
) -> None:
    # Given a run made by an unguarded script, a generic worker (Celery, SQS, Temporal: they all ask
    # control.agent_of_run) is handed one of its items in a fresh process elsewhere.
    script = write_script(tmp_path, UNGUARDED)
    run_id = first_run(cli_env, script, tenant)
    proc = subprocess.run(
        [sys.executable, "-c", GENERIC_WORKER, run_id, tenant],
        env=cli_env,
        capture_output=True,
        timeout=120,
        check=True,
        cwd=tmp_path,
    )
    out = proc.stdout.decode()
    # It refuses, saying why and what to do, and the script's batch did not run again.
    assert out.startswith("refused: This worker cannot run agent batch.enrich"), out
    assert BATCH_LINE in out
    assert '__name__ == "__main__"' in out
    assert len(runs_of(cli_env, tenant)) == 1
    assert (len(lines(script, "starts.log")), len(lines(script, "calls.log"))) == (1, 5)


def test_papayya_worker_refuses_a_script_that_starts_a_batch_when_imported(
    cli_env: dict[str, str], tmp_path: Path, tenant: str
) -> None:
    script = write_script(tmp_path, UNGUARDED)
    result = papayya(cli_env, "worker", f"{script}:enrich")
    assert_one_sentence(result, str(script), BATCH_LINE, '__name__ == "__main__"')
    # The script was not imported: its batch never started, so its tenant was never even created.
    assert lines(script, "starts.log") == []
    assert_one_sentence(papayya(cli_env, "runs", "list", "--tenant", tenant), "does not exist")


def test_a_guarded_script_replays_an_item_and_resumes_a_run_from_the_command_line(
    cli_env: dict[str, str], tmp_path: Path, tenant: str
) -> None:
    # Given the same batch under `if __name__ == "__main__":`, run once.
    script = write_script(tmp_path, GUARDED)
    run_id = first_run(cli_env, script, tenant)
    assert (len(lines(script, "starts.log")), len(lines(script, "calls.log"))) == (1, 5)
    # Replaying the failed item (after the fix) runs exactly that item: one new run, one paid call.
    out = ok_text(papayya(cli_env, "replay", "--item", item_id(cli_env, run_id, "i3"), BATCH_FIXED="1"))
    assert "succeeded 1, degraded 0, failed 0 of 1 items" in out, out
    assert len(runs_of(cli_env, tenant)) == 2
    assert lines(script, "starts.log") == ["batch"]
    assert lines(script, "calls.log")[5:] == ["answer i3"]
    # A guarded run paused by its budget resumes from the command line and pays each item once.
    paused = first_run(cli_env, script, tenant, BATCH_BUDGET="0")
    ok_text(papayya(cli_env, "runs", "set", paused, "--budget", "1"))
    out = ok_text(papayya(cli_env, "resume", paused))
    assert "succeeded 4, degraded 0, failed 1 of 5 items" in out, out
    assert len(lines(script, "starts.log")) == 2
    assert sorted(lines(script, "calls.log")[6:]) == [f"answer i{n}" for n in range(5)]


def test_replay_from_the_script_itself_uses_the_agent_it_defines(
    cli_env: dict[str, str], tmp_path: Path, tenant: str
) -> None:
    # Given an unguarded script that replays its own failed items in the same process,
    script = write_script(tmp_path, UNGUARDED)
    printed = run_batch({**cli_env, "BATCH_REPLAY_HERE": "1"}, script, tenant)
    # the replay used the agent defined in this process: the script did not run again.
    assert "replayed" in printed, printed
    assert lines(script, "starts.log") == ["batch"]
    assert len(lines(script, "calls.log")) == 6
    assert len(runs_of(cli_env, tenant)) == 2


NESTED = """
def make():
    @agent
    def nested(item):
        return enrich.fn(item)

    return nested


nested = make()

if __name__ == "__main__":
    result = nested.map([{"id": f"i{n}"} for n in range(5)], tenant=sys.argv[1])
    print("run", result.run_id, result.status)
"""


@pytest.mark.parametrize("layout", ["function", "interactive"])
def test_agents_no_other_process_can_import_are_refused_with_the_in_process_way(
    cli_env: dict[str, str], tmp_path: Path, tenant: str, layout: str
) -> None:
    # Given an agent defined inside a function, or in an interactive session (python -c, a notebook):
    if layout == "function":
        script = write_script(tmp_path, NESTED)
        run_id = first_run(cli_env, script, tenant)
        fragment = "defined inside a function"
    else:
        script = write_script(tmp_path, "batch()\n")
        code = script.read_text().replace("Path(__file__).parent", f"Path({str(script.parent)!r})")
        proc = subprocess.run(
            [sys.executable, "-c", code, tenant],
            env=cli_env,
            capture_output=True,
            timeout=120,
            check=True,
            cwd=script.parent,
        )
        words = proc.stdout.decode().split()
        run_id = words[words.index("run") + 1]
        fragment = "interactive session"
    # another process cannot find it: the refusal names the in-process alternative, nothing is created.
    result = papayya(cli_env, "replay", "--item", item_id(cli_env, run_id, "i3"))
    assert_one_sentence(result, fragment, ".replay(...)")
    assert len(runs_of(cli_env, tenant)) == 1


# -- the documented Celery layout: @app.task above @agent ------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
CELERY_BROKER = "redis://127.0.0.1:6379/12"


@pytest.fixture
def celery_env(cli_env: dict[str, str], tenant: str) -> dict[str, str]:
    """The shell of a team running examples/celery_app.py: its broker, papayya on Celery, a tenant."""
    fresh_redis(CELERY_BROKER)
    return {**cli_env, "CELERY_BROKER_URL": CELERY_BROKER, "PAPAYYA_BACKEND": "celery", "TENANT": tenant}


def celery_worker(env: dict[str, str], log: Path) -> contextlib.AbstractContextManager[object]:
    """``celery -A examples.celery_app worker``, as docs/adapters/celery.md starts it."""
    return switch_celery.celery_worker("examples.celery_app", env, REPO, log)


def python(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, *args], env=env, cwd=REPO, capture_output=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode()


@pytest.mark.slow
def test_the_cli_replays_and_resumes_a_run_of_the_celery_example_through_a_real_worker(
    celery_env: dict[str, str], tmp_path: Path, tenant: str
) -> None:
    with celery_worker(celery_env, tmp_path / "worker.log"):
        # Given the example's run through the worker: 18 succeeded, 2 failed (documents 8 and 9).
        printed = python(celery_env, "-m", "examples.celery_app")
        assert "succeeded 18, degraded 0, failed 2 of 20 items" in printed, printed
        (first,) = runs_of(celery_env, tenant)
        # When the failed items are replayed from the command line (@app.task above @agent),
        out = ok_text(papayya(celery_env, "replay", "--run", str(first["run_id"]), "--outcome", "failed"))
        # then exactly those two ran again, on Celery, and no new batch of 20 was started.
        assert "failed 2 of 2 items" in out, out
        runs = runs_of(celery_env, tenant)
        assert sorted(r["total"] for r in runs) == [2, 20]
        assert {r["backend"] for r in runs} == {"celery"}

    # Given a run submitted while no worker runs, then paused,
    handle = python(
        celery_env,
        "-c",
        "import os; from examples.celery_app import enrich, ITEMS; "
        "print(enrich.submit(ITEMS, tenant=os.environ['TENANT']).run_id)",
    ).strip()
    ok_text(papayya(celery_env, "pause", handle))
    with celery_worker(celery_env, tmp_path / "worker2.log"):
        # its messages are parked by the worker; resumed from the command line, the run completes there.
        out = ok_text(papayya(celery_env, "resume", handle))
    assert "succeeded 18, degraded 0, failed 2 of 20 items" in out, out
    assert len(runs_of(celery_env, tenant)) == 3
