"""map() shows live progress on a terminal and stays quiet otherwise."""

from __future__ import annotations

from decimal import Decimal

import pytest

import papayya
from papayya import agent, run
from papayya.progress import Progress
from papayya.runtime import Runtime


@agent
def priced(item: papayya.Item) -> str:
    run.record_llm_call(provider="openai", model="gpt-4o-mini", input_tokens=1000, output_tokens=100)
    return "ok" if item.id != "bad" else ""


def test_quiet_when_not_asked(rt: Runtime, tenant: str, capsys: pytest.CaptureFixture[str]) -> None:
    priced.map([{"id": "a"}], tenant=tenant)
    assert capsys.readouterr().err == ""


def test_progress_line_shows_counts_and_spend(
    rt: Runtime, tenant: str, capsys: pytest.CaptureFixture[str]
) -> None:
    result = priced.map([{"id": "a"}, {"id": "b"}, {"id": "bad"}], tenant=tenant, progress=True)
    err = capsys.readouterr().err
    assert "3/3" in err
    assert "✓ 2" in err
    assert "~ 1" in err
    assert f"${result.cost_usd:.4f}" in err


def test_progress_counts_are_thread_safe() -> None:
    bar = Progress("x", total=3, enabled=False)
    with bar:
        bar.advance("succeeded", Decimal("0.5"))
        bar.advance("failed", Decimal(0))
        bar.advance("degraded", Decimal("0.25"))
    assert bar.counts == {"succeeded": 1, "degraded": 1, "failed": 1}
    assert bar.cost == Decimal("0.75")
