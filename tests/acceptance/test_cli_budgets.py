"""Budgets from the command line, end to end as a user meets them: a batch script run with ``python``,
paused by its tenant's (or its own) budget, inspected, refused, raised and resumed with ``papayya``.

The agent is a user's module written to a temporary directory: two ``run.llm`` calls per item to a fake
provider that appends one line per call it bills to ``calls.log``. Input tokens are priced at 0 and
output at $1 per 1,000 tokens, and the fake uses its whole ``max_tokens=50``: every call costs exactly
the $0.05 it reserved, so a budget is spent to the cent and the figures are easy to read.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import pytest

from papayya.runtime import Runtime
from tests.acceptance.test_cli import assert_one_sentence, ok_json, ok_text, papayya, papayya_all

CALL = Decimal("0.05")  # what every call costs: 50 output tokens at $1 per 1,000
PRICE = "openai:gpt-4o-mini=0/1000"

BATCH = '''
"""A user's batch: every item asks the model for a draft, then for a final answer."""

import argparse
import os
import sys
import threading
from pathlib import Path

from papayya import agent, run

CALLS = Path(__file__).with_name("calls.log")
_lock = threading.Lock()
_gate: list[bool] = []


def fake_llm(*, prompt: str, max_tokens: int) -> dict:
    """An OpenAI-shaped reply that uses all of max_tokens; each call billed is a line in calls.log."""
    if os.environ.get("BATCH_GATE") and not _gate:
        _gate.append(True)
        print("calling", flush=True)  # the first call waits until the test says go
        sys.stdin.readline()
    with _lock, CALLS.open("a") as log:
        log.write(prompt + "\\n")
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": prompt.upper()}}
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": max_tokens, "total_tokens": 12 + max_tokens},
    }


@agent
def enrich(item):
    draft = run.llm("draft", provider="openai", model="gpt-4o-mini", max_tokens=50)(
        fake_llm, prompt=f"draft {item.id}", max_tokens=50
    )
    final = run.llm("final", provider="openai", model="gpt-4o-mini", max_tokens=50)(
        fake_llm, prompt=f"final {item.id}", max_tokens=50
    )
    replies = {"draft": draft, "final": final}
    return {step: reply["choices"][0]["message"]["content"] for step, reply in replies.items()}


def main() -> None:
    args = argparse.ArgumentParser()
    args.add_argument("tenant")
    args.add_argument("--items", type=int, default=40)
    args.add_argument("--concurrency", type=int, default=4)
    args.add_argument("--run-budget", default=None)
    opts = args.parse_args()
    items = [{"id": f"i{n:02d}", "text": f"item {n}"} for n in range(opts.items)]
    print(enrich.map(items, tenant=opts.tenant, concurrency=opts.concurrency, budget_usd=opts.run_budget))


if __name__ == "__main__":
    main()
'''


@pytest.fixture
def batch(tmp_path: Path) -> Path:
    """The user's script, in a directory of its own."""
    script = tmp_path / "project" / "batch.py"
    script.parent.mkdir()
    script.write_text(BATCH, encoding="utf-8")
    return script


def run_batch(env: dict[str, str], script: Path, *args: str) -> str:
    """``python batch.py ARGS`` from the script's directory; its stdout (the printed RunResult)."""
    proc = subprocess.run(
        [sys.executable, str(script), *args],
        env=env,
        cwd=script.parent,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode()


def billed(script: Path) -> Counter[str]:
    """What the fake provider billed: one count per (item, step), e.g. ``draft i07``."""
    log = script.with_name("calls.log")
    return Counter(log.read_text().splitlines()) if log.exists() else Counter()


def only_run(env: dict[str, str], tenant: str) -> str:
    (row,) = ok_json(papayya(env, "runs", "list", "--tenant", tenant, "--json"))
    return str(row["run_id"])


def assert_billed_once_per_step(env: dict[str, str], run_id: str, script: Path, items: int) -> None:
    """The provider billed each (item, step) once, and the ledger holds exactly those calls."""
    calls = billed(script)
    assert sorted(calls) == sorted(f"{step} i{n:02d}" for n in range(items) for step in ("draft", "final"))
    assert set(calls.values()) == {1}, [k for k, n in calls.items() if n > 1]
    summary, listing = papayya_all(
        env, ["runs", "show", run_id, "--json"], ["items", "list", run_id, "--json"]
    )
    assert ok_json(summary)["llm_calls"] == sum(calls.values()) == 2 * items
    # An item's cost is the sum of its ledger rows: a step recorded twice would show as $0.15.
    rows = ok_json(listing)["items"]
    assert {r["key"]: (r["status"], r["cost_usd"]) for r in rows} == {
        f"i{n:02d}": ("succeeded", "0.1")
        for n in range(items)  # 2 calls at $0.05
    }
    # The items that ran again after the pause have one draft and one final call in the ledger.
    resumed = [r["item_id"] for r in rows if r["attempts"] > 1]
    for shown in papayya_all(env, *(["items", "show", item_id, "--json"] for item_id in resumed)):
        steps = sorted(c["step_key"] for c in ok_json(shown)["llm_calls"])
        assert [s.split("#")[0] for s in steps] == ["llm:draft", "llm:final"], steps


def test_a_tenant_budget_pauses_the_batch_and_resume_finishes_it_paying_nothing_twice(
    rt: Runtime, tenant: str, cli_env: dict[str, str], batch: Path, tmp_path: Path
) -> None:
    # Given a tenant whose monthly budget pays for 10 of the 80 calls its batch needs
    ok_text(papayya(cli_env, "tenants", "add", tenant))
    assert "priced openai/gpt-4o-mini" in ok_text(
        papayya(cli_env, "tenants", "set", tenant, "--price", PRICE)
    )
    set_text = ok_text(papayya(cli_env, "tenants", "set", tenant, "--budget", "0.50", "--period", "month"))
    assert "budget $0.50 per month" in set_text

    # When the user runs the batch, it pauses instead of failing
    printed = run_batch(cli_env, batch, tenant)
    assert ": paused (budget:tenant" in printed
    run_id = only_run(cli_env, tenant)

    # Then the CLI shows the run paused by the tenant's budget, spent to the cent and no further
    shown, text, listed, listed_json, tenant_json, tenant_text = papayya_all(
        cli_env,
        ["runs", "show", run_id, "--json"],
        ["runs", "show", run_id],
        ["runs", "list", "--tenant", tenant],
        ["runs", "list", "--tenant", tenant, "--json"],
        ["tenants", "show", tenant, "--json"],
        ["tenants", "show", tenant],
    )
    detail = ok_json(shown)
    assert detail["status"] == "paused"
    assert detail["paused_reason"].startswith(f"budget:tenant: tenant {tenant} has spent")
    assert detail["counts"]["failed"] == 0
    assert detail["counts"]["paused"] + detail["counts"]["queued"] > 0
    (budget,) = detail["budget"]
    assert (budget["scope"], budget["budget_usd"]) == ("tenant", "0.5")
    assert Decimal(budget["spent_usd"]) == Decimal(detail["cost_usd"]) == 10 * CALL
    assert detail["llm_calls"] == sum(billed(batch).values()) == 10
    out = ok_text(text)
    assert f"paused: tenant {tenant} has spent" in out
    assert f"tenant {budget['period']}: spent $0.50 of $0.50" in out
    assert f"`papayya tenants set {tenant} --budget USD`, then `papayya resume {run_id}`" in out
    assert "paused (budget:tenant)" in ok_text(listed)
    (row,) = ok_json(listed_json)
    assert (row["status"], row["paused_reason"], row["budget_usd"]) == (
        "paused",
        detail["paused_reason"],
        None,
    )
    tenant_detail = ok_json(tenant_json)
    assert tenant_detail["budget"] == {
        "budget_usd": "0.5",
        "period": "month",
        "period_key": budget["period"],
        "spent_usd": "0.5",
        "reserved_usd": "0",
    }
    assert tenant_detail["paused_runs"] == [run_id]
    out = ok_text(tenant_text)
    assert f"$0.50 per month; spent $0.50 in {budget['period']}, all of it" in out
    assert f"papayya resume --tenant {tenant}" in out

    # When the user resumes while the budget is still spent, it is refused with one sentence
    assert_one_sentence(
        papayya(cli_env, "resume", run_id),
        f"Tenant {tenant!r} has spent $0.50 of its $0.50 budget",
        "--budget",
    )
    assert sum(billed(batch).values()) == 10

    # When the budget is raised, the CLI points at the paused run
    raised = ok_text(papayya(cli_env, "tenants", "set", tenant, "--budget", "10"))
    assert "budget $10.00 per month" in raised
    assert f"has 1 paused run; continue with `papayya resume --tenant {tenant}`" in raised

    # And resuming (from another directory: the agent comes from the run's recorded script) finishes it
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "papayya", "resume", run_id],
        env=cli_env,
        cwd=elsewhere,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    summary = proc.stdout.decode()
    assert f"run {run_id}" in summary
    assert "completed" in summary
    assert "succeeded 40, degraded 0, failed 0 of 40 items" in summary

    # Then every item succeeded, and each (item, step) was billed once and recorded once
    done = ok_json(papayya(cli_env, "runs", "show", run_id, "--json"))
    assert (done["status"], done["paused_reason"]) == ("completed", None)
    assert done["counts"] == {"succeeded": 40, "degraded": 0, "failed": 0}
    assert_billed_once_per_step(cli_env, run_id, batch, 40)

    # And a finished run can be neither paused nor resumed, and the tenant has nothing left to resume
    pause_done, resume_done, resume_tenant = papayya_all(
        cli_env, ["pause", run_id], ["resume", run_id], ["resume", "--tenant", tenant]
    )
    assert_one_sentence(pause_done, f"Run {run_id} is completed, not running")
    assert_one_sentence(resume_done, f"Run {run_id} is completed, not paused")
    assert_one_sentence(resume_tenant, f"Tenant {tenant!r} has no paused runs")


def test_a_run_budget_is_set_raised_and_resumed_from_the_cli(
    rt: Runtime, tenant: str, cli_env: dict[str, str], batch: Path
) -> None:
    # Given a tenant with no budget, and a batch run with a budget of its own for 6 calls
    ok_text(papayya(cli_env, "tenants", "add", tenant, "--price", PRICE))
    assert ": paused (budget:run" in run_batch(cli_env, batch, tenant, "--items", "8", "--run-budget", "0.30")
    run_id = only_run(cli_env, tenant)

    # Then the run shows its own budget, spent
    detail = ok_json(papayya(cli_env, "runs", "show", run_id, "--json"))
    assert (detail["status"], detail["budget_usd"]) == ("paused", "0.3")
    assert detail["budget"] == [
        {"scope": "run", "period": "total", "spent_usd": "0.3", "reserved_usd": "0", "budget_usd": "0.3"}
    ]
    assert f"raise it with `papayya runs set {run_id} --budget" in assert_one_sentence(
        papayya(cli_env, "resume", run_id)
    )

    # When the user raises the run's budget and resumes it
    raised = ok_text(papayya(cli_env, "runs", "set", run_id, "--budget", "5"))
    assert f"Run {run_id} now has a budget of $5.00 (spent $0.30 of it)." in raised
    assert f"continue with `papayya resume {run_id}` (the run's budget has $4.70 left)" in raised
    result = ok_json(papayya(cli_env, "resume", run_id, "--concurrency", "2", "--json"))

    # Then it completes, within its budget, every call paid once
    assert (result["run_id"], result["status"], result["budget_usd"]) == (run_id, "completed", "5")
    assert result["counts"] == {"succeeded": 8, "degraded": 0, "failed": 0}
    assert result["budget"] == [
        {"scope": "run", "period": "total", "spent_usd": "0.8", "reserved_usd": "0", "budget_usd": "5"}
    ]
    assert_billed_once_per_step(cli_env, run_id, batch, 8)

    # And a finished run's budget is no longer something to set
    assert_one_sentence(
        papayya(cli_env, "runs", "set", run_id, "--no-budget"), f"Run {run_id} is completed; a budget applies"
    )


@contextmanager
def batch_in_flight(env: dict[str, str], script: Path, *args: str) -> Iterator[Callable[[], str]]:
    """Start the batch with one item at a time; return once its first call is in flight, waiting.

    Yields ``release``: let the call finish and return what the script printed.
    """
    with subprocess.Popen(
        [sys.executable, str(script), *args, "--concurrency", "1"],
        env={**env, "BATCH_GATE": "1"},
        cwd=script.parent,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdin is not None
        assert proc.stdout is not None

        def release() -> str:
            printed, err = proc.communicate("go\n", timeout=60)
            assert proc.returncode == 0, err
            return printed

        try:
            if proc.stdout.readline() != "calling\n":
                pytest.fail(f"the batch did not start: {proc.communicate(timeout=60)[1]}")
            yield release
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def test_a_budget_already_spent_pauses_the_running_batch_at_once(
    rt: Runtime, tenant: str, cli_env: dict[str, str], batch: Path
) -> None:
    # Given a batch whose first call is in flight
    ok_text(papayya(cli_env, "tenants", "add", tenant, "--price", PRICE))
    with batch_in_flight(cli_env, batch, tenant, "--items", "5") as release:
        run_id = only_run(cli_env, tenant)

        # When the user sets a budget of $0 ("stop spending now")
        stopped = ok_text(papayya(cli_env, "tenants", "set", tenant, "--budget", "0"))

        # Then the CLI says the running run is now paused, and names it
        assert f"Tenant {tenant!r} has already spent $0.00 of its new $0.00 budget for " in stopped
        assert "so its 1 running run is now paused" in stopped
        assert f"papayya resume --tenant {tenant}" in stopped
        assert f"\n  {run_id}\n" in stopped

        # And the call in flight finishes, but no other item starts
        printed = release()
    assert ": paused (budget:tenant" in printed
    assert "draft i00" in billed(batch)
    assert set(billed(batch)) <= {"draft i00", "final i00"}  # the item in flight may finish; no other starts

    # When the budget is raised and the tenant's paused runs resumed
    ok_text(papayya(cli_env, "tenants", "set", tenant, "--budget", "1", "--period", "day"))
    (result,) = ok_json(papayya(cli_env, "resume", "--tenant", tenant, "--json"))

    # Then the batch completes, the call made before the pause not paid again
    assert (result["run_id"], result["status"]) == (run_id, "completed")
    assert result["counts"] == {"succeeded": 5, "degraded": 0, "failed": 0}
    assert_billed_once_per_step(cli_env, run_id, batch, 5)
    tenant_budget = ok_json(papayya(cli_env, "tenants", "show", tenant, "--json"))["budget"]
    assert (tenant_budget["budget_usd"], tenant_budget["period"], tenant_budget["spent_usd"]) == (
        "1",
        "day",
        "0.5",
    )


def test_a_person_pauses_a_running_batch_and_resumes_it(
    rt: Runtime, tenant: str, cli_env: dict[str, str], batch: Path
) -> None:
    # Given a batch whose first call is in flight
    ok_text(papayya(cli_env, "tenants", "add", tenant, "--price", PRICE))
    with batch_in_flight(cli_env, batch, tenant, "--items", "4") as release:
        run_id = only_run(cli_env, tenant)

        # When a person pauses it
        paused = ok_text(papayya(cli_env, "pause", run_id, "--reason", "checking the prompts"))
        assert f"Paused run {run_id}" in paused
        assert f"`papayya resume {run_id}`" in paused

        # Then the call in flight finishes, and no other item starts
        printed = release()
    assert ": paused (manual: checking the prompts)" in printed
    assert "draft i00" in billed(batch)
    assert set(billed(batch)) <= {"draft i00", "final i00"}  # the item in flight may finish; no other starts
    text, listed = papayya_all(cli_env, ["runs", "show", run_id], ["runs", "list", "--tenant", tenant])
    out = ok_text(text)
    assert "paused: checking the prompts" in out
    assert f"continue with `papayya resume {run_id}`" in out
    assert "paused (manual)" in ok_text(listed)
    assert_one_sentence(papayya(cli_env, "pause", run_id), f"Run {run_id} is paused, not running")

    # When it is resumed, it completes, paying nothing twice
    assert "completed" in ok_text(papayya(cli_env, "resume", run_id))
    assert_billed_once_per_step(cli_env, run_id, batch, 4)


def test_removing_a_budget_lets_a_paused_run_continue(
    rt: Runtime, tenant: str, cli_env: dict[str, str], batch: Path
) -> None:
    # Given a batch paused by its tenant's budget for all time
    ok_text(
        papayya(cli_env, "tenants", "add", tenant, "--price", PRICE, "--budget", "0.20", "--period", "total")
    )
    assert ": paused (budget:tenant" in run_batch(cli_env, batch, tenant, "--items", "6")
    run_id = only_run(cli_env, tenant)

    # When the budget is removed
    removed = ok_text(papayya(cli_env, "tenants", "set", tenant, "--no-budget"))

    # Then the tenant has none, its spend still shows, and the paused run can continue
    assert "removed the budget (period total)" in removed
    assert "has 1 paused run" in removed
    shown, listing = papayya_all(
        cli_env, ["tenants", "show", tenant, "--json"], ["tenants", "list", "--json"]
    )
    assert ok_json(shown)["budget"] == {
        "budget_usd": None,
        "period": "total",
        "period_key": "total",
        "spent_usd": "0.2",
        "reserved_usd": "0",
    }
    assert next(t for t in ok_json(listing) if t["tenant"] == tenant)["budget"]["budget_usd"] is None
    assert "completed" in ok_text(papayya(cli_env, "resume", run_id))
    assert_billed_once_per_step(cli_env, run_id, batch, 6)
