"""The tenant batch through each client library papayya instruments (``--client``), at the local fake
provider: the same outcomes whichever library makes the call, the same cost for the same model (and
prices: Claude 3.5 Haiku costs the same through Anthropic's API and Bedrock's), and
what papayya recorded equal to what the provider billed, call for call."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest

from tests.acceptance.test_example import run_example

SUMMARY = re.compile(
    r"tenant (\w+) .*?\n\s+items\s+([\d,]+): ([\d,]+) succeeded, ([\d,]+) degraded, ([\d,]+) failed\n"
    r"\s+cost\s+\$(\d+\.\d{6}) this run over ([\d,]+) LLM calls"
)
BILL = re.compile(
    r"provider\s+billed \$(\d+\.\d{6}) for ([\d,]+) calls; papayya recorded \$(\d+\.\d{6}) for ([\d,]+) calls"
)


def summary(out: str) -> tuple[dict[str, tuple[str, ...]], dict[str, str], tuple[str, ...]]:
    """(outcome counts per tenant, cost per tenant, the provider's bill against papayya's record)."""
    rows = SUMMARY.findall(out)
    assert len(rows) == 3, out
    bill = BILL.search(out)
    assert bill, out
    return {r[0]: r[1:5] for r in rows}, {r[0]: r[5] for r in rows}, bill.groups()


@pytest.mark.slow
def test_every_client_library_gives_the_same_outcomes_and_the_ledger_matches_the_bill(
    database_url: str, tmp_path: Path
) -> None:
    seen = {}
    for client in ("openai", "litellm", "langchain", "anthropic", "bedrock"):
        cwd = tmp_path / client
        cwd.mkdir()
        out = run_example(database_url, cwd, args=["--client", client, "--scale", "0.1"])
        assert f"LLM: {client} client library" in out
        seen[client] = summary(out)
        counts, _, (billed, bill_calls, recorded, calls) = seen[client]
        # papayya recorded exactly what the provider billed, call for call
        assert (billed, bill_calls) == (recorded, calls)
        assert int(calls) == sum(int(c[0]) for c in counts.values()) == 120  # one call per item
        assert all(int(c[2]) > 0 for c in counts.values())  # the injected problems are there
    # The same outcomes whatever library makes the call; the same cost for the same model and prices
    # (gpt-4o-mini through the OpenAI client, LiteLLM and LangChain; Claude 3.5 Haiku through
    # Anthropic's client and through boto3's Bedrock Converse, at the same prices; Claude costs more)
    assert seen["openai"][0] == seen["litellm"][0] == seen["langchain"][0] == seen["anthropic"][0]
    assert seen["anthropic"][0] == seen["bedrock"][0]
    assert seen["openai"][1] == seen["litellm"][1] == seen["langchain"][1]
    assert seen["anthropic"][1] == seen["bedrock"][1] != seen["openai"][1]


@pytest.mark.slow
def test_the_tenant_batch_in_batch_mode_ends_as_live_for_half_the_price(
    database_url: str, tmp_path: Path
) -> None:
    live, batch = tmp_path / "live", tmp_path / "batch"
    live.mkdir()
    batch.mkdir()
    args = ["--client", "openai", "--scale", "0.1"]
    live_counts, live_costs, _ = summary(run_example(database_url, live, args=args))
    out = run_example(database_url, batch, args=[*args, "--llm-mode", "batch"])
    assert "through its batch API" in out
    counts, costs, (billed, bill_calls, recorded, calls) = summary(out)
    # every item ends as it did live, each call billed once at the batch rate, and recorded as billed
    assert counts == live_counts
    assert (billed, bill_calls) == (recorded, calls)
    assert int(calls) == 120
    for tenant, cost in costs.items():
        assert Decimal(cost) * 2 == pytest.approx(Decimal(live_costs[tenant]), abs=Decimal("0.000002"))
    assert len(re.findall(r"batch\s+[\d,]+ calls at the batch rate", out)) == 3
