"""The budget commands' parsing and wording, in-process and without a database.

What needs the store (setting, pausing, resuming) is in tests/acceptance/test_cli_budgets.py.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from papayya.cli import main
from papayya.cli.params import BUDGET
from papayya.cli.runs import budget_lines, resume_hint, status_cell, status_text
from papayya.errors import BudgetError
from papayya.result import RunResult

RUN = "0b6f5a4e-8a51-4c1e-9f0d-3c2f0e1d2a3b"


@pytest.fixture(autouse=True)
def _keep_logging() -> Iterator[None]:
    """main() configures the papayya logger for a CLI process; put it back for the other tests."""
    log = logging.getLogger("papayya")
    saved = (list(log.handlers), log.level, log.propagate)
    yield
    log.handlers[:], log.level, log.propagate = saved[0], saved[1], saved[2]


@pytest.mark.parametrize(
    ("text", "amount"),
    [
        ("40", Decimal(40)),
        ("12.50", Decimal("12.50")),
        ("$7", Decimal(7)),
        (" 0 ", Decimal(0)),
        ("1e3", Decimal(1000)),
    ],
)
def test_a_budget_is_a_decimal_amount_of_usd(text: str, amount: Decimal) -> None:
    parsed = BUDGET.convert(text, None, None)
    assert isinstance(parsed, Decimal)
    assert parsed == amount


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("-5", "must be a finite amount of USD >= 0"),
        ("Infinity", "must be a finite amount of USD >= 0"),
        ("NaN", "must be a finite amount of USD >= 0"),
        ("lots", "is not a number; give USD, e.g. 40 or 12.50"),
        ("40,000", "is not a number"),
        ("", "is not a number"),
    ],
)
def test_a_bad_budget_says_what_a_budget_is(text: str, fragment: str) -> None:
    with pytest.raises(BudgetError, match=fragment):
        BUDGET.convert(text, None, None)


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (
            ["tenants", "set", "t47", "--budget", "-5"],
            ["The budget '-5' must be a finite amount of USD >= 0"],
        ),
        (["tenants", "set", "t47", "--budget", "lots"], ["The budget 'lots' is not a number", "e.g. 40"]),
        (["tenants", "add", "t47", "--budget", "NaN"], ["must be a finite amount"]),
        (["tenants", "set", "t47", "--period", "week"], ["'week' is not one of 'total', 'month', 'day'"]),
        (["tenants", "set", "t47", "--budget", "5", "--no-budget"], ["--budget or --no-budget, not both"]),
        (["tenants", "set", "t47"], ["Nothing to change", "--budget", "--no-budget"]),
        (["runs", "set", RUN], ["Nothing to change: give --budget or --no-budget"]),
        (["runs", "set", RUN, "--budget", "1", "--no-budget"], ["--budget or --no-budget, not both"]),
        (["runs", "set", RUN, "--budget", "-1"], ["must be a finite amount"]),
        (["runs", "set", "run-1", "--budget", "1"], ["'run-1' is not a run id", "papayya runs list"]),
        (["pause"], ["Missing argument 'RUN'"]),
        (["pause", "42"], ["'42' is not a run id"]),
        (["resume"], ["Give the RUN to resume, or --tenant TENANT", "papayya resume --help"]),
        (["resume", RUN, "--tenant", "t47"], ["Give a RUN or --tenant, not both"]),
        (["resume", RUN, "--concurrency", "0"], ["'--concurrency'", "0 is not in the range"]),
        (["resume", "--tenant", "t\x1b[31m"], ["control", "\\x1b"]),
    ],
)
def test_budget_refusals_are_one_sentence_with_exit_code_2(
    capsys: pytest.CaptureFixture[str], args: list[str], fragments: list[str]
) -> None:
    code = main(args)
    out, err = capsys.readouterr()

    assert (code, out) == (2, ""), err
    assert err.count("\n") == 1
    assert err.startswith("papayya: ")
    assert "\x1b" not in err
    for fragment in fragments:
        assert fragment in err
    assert len(err) < 400


def test_help_lists_the_budget_commands(capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["--help"], ["pause", "--help"], ["resume", "--help"], ["runs", "set", "--help"]):
        assert main(args) == 0
    out = capsys.readouterr().out
    for fragment in ("pause", "resume", "--tenant", "--concurrency", "--no-budget", "--reason"):
        assert fragment in out
    assert main(["tenants", "set", "--help"]) == 0
    out = capsys.readouterr().out
    assert "[total|month|day]" in out
    assert "--budget USD" in out


def test_a_paused_status_says_why() -> None:
    reason = "budget:tenant: tenant t47 has spent $40.00 (+$0.00 in flight) of its $40.00 budget for 2026-11"
    assert status_text("paused", reason) == (
        "paused: tenant t47 has spent $40.00 (+$0.00 in flight) of its $40.00 budget for 2026-11"
    )
    assert status_text("paused", "manual: paused by a person") == "paused by a person"
    assert status_text("paused", "manual: checking the prompts") == "paused: checking the prompts"
    assert status_text("paused", "something else: entirely") == "paused: something else: entirely"
    assert status_text("paused", None) == "paused"
    assert status_text("completed", None) == "completed"

    assert str(status_cell("paused", reason)) == "paused (budget:tenant)"
    assert str(status_cell("paused", "unpriced: acme/m1 has no known price")) == "paused (unpriced)"
    assert str(status_cell("paused", None)) == "paused"
    assert status_cell("running", None) == "running"


def budget(scope: str, period: str, spent: str, limit: str, reserved: str = "0") -> dict[str, Any]:
    return {
        "scope": scope,
        "period": period,
        "spent_usd": Decimal(spent),
        "reserved_usd": Decimal(reserved),
        "budget_usd": Decimal(limit),
    }


def test_budget_lines_are_spend_against_each_budget_in_exact_money() -> None:
    assert budget_lines(
        [budget("tenant", "2026-11", "40", "40"), budget("run", "total", "0.0125", "5", reserved="0.3")]
    ) == ["tenant 2026-11: spent $40.00 of $40.00", "run: spent $0.0125 of $5.00 (+$0.30 reserved)"]
    assert budget_lines([]) == []


def paused_run(reason: str | None, *budgets: dict[str, Any], tenant: str = "t47") -> RunResult:
    return RunResult(
        run_id=UUID(RUN),
        tenant=tenant,
        agent="enrich",
        status="paused",
        total=10,
        counts={},
        cost_usd=Decimal(0),
        unpriced_calls=0,
        llm_calls=0,
        paused_reason=reason,
        budget=list(budgets),
    )


def test_the_resume_hint_names_the_budget_to_raise_only_while_it_is_spent() -> None:
    spent = budget("tenant", "2026-11", "40", "40")
    room = budget("tenant", "2026-11", "40", "100")
    tenant_reason = "budget:tenant: tenant t47 has spent $40.00 of its $40.00 budget for 2026-11"

    assert resume_hint(paused_run(tenant_reason, spent)) == (
        f"raise the tenant's budget with `papayya tenants set t47 --budget USD`, then `papayya resume {RUN}`"
    )
    assert resume_hint(paused_run(tenant_reason, room)) == (
        f"continue with `papayya resume {RUN}` (the tenant's budget has $60.00 left)"
    )
    assert resume_hint(
        paused_run("budget:run: run x has spent $1.00 of its $1.00 budget", budget("run", "total", "1", "1"))
    ) == (f"raise the run's budget with `papayya runs set {RUN} --budget USD`, then `papayya resume {RUN}`")
    assert "--price PROVIDER:MODEL=IN/OUT" in resume_hint(paused_run("unpriced: acme/m1 has no known price"))
    assert resume_hint(paused_run("manual: paused by a person")) == f"continue with `papayya resume {RUN}`"
    # A tenant id that needs quoting is quoted for the shell.
    assert "`papayya tenants set 'acme corp' --budget USD`" in resume_hint(
        paused_run(tenant_reason, spent, tenant="acme corp")
    )
