"""The counting rule on a real store: across runs, every item a tenant sent counts once, with its
current outcome (the newest conclusion across its replays); replays are shown beside, never added.

The shape of issue 17 scaled down: a 40-item run with a degraded slice, replayed twice (the first
replay fixes a part of it, the second fixes nothing more). The tenant still has 40 items in
``tenants show``, ``tenants list``, the dashboard's API and page, and cross-run clusters name each
item once.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any

import psycopg
import pytest

import papayya
from papayya import agent, run
from papayya.cli import main as cli_main
from papayya.result import RunResult
from papayya.runtime import Runtime

pytest.importorskip("starlette", reason="the ui extra is not installed: pip install 'papayya[ui]'")
pytest.importorskip("httpx", reason="httpx drives the dashboard's application in these tests")

from starlette.testclient import TestClient

from papayya.ui.app import create_app

ITEMS = 40
FIXED = threading.Event()  # the user's fix for half of the degraded items


def fake_llm(*, prompt: str) -> dict[str, Any]:
    return {
        "model": "gpt-4o-mini",
        "usage": {"prompt_tokens": 10, "completion_tokens": 5},
        "choices": [{"finish_reason": "stop", "message": {"content": prompt}}],
    }


@agent(name="counting-enrich")
def enrich(item: papayya.Item) -> Any:
    """Of every ten items, 3 and 8 are degraded (the fix mends 3 only), 5 fails; the rest succeed."""
    n = int(item.id.rsplit("-", 1)[1])
    run.llm("answer", provider="openai", model="gpt-4o-mini", max_tokens=5)(fake_llm, prompt=item.id)
    if n % 10 == 5:
        raise ValueError(f"cannot parse item {item.id!r}")
    if n % 10 == 8 or (n % 10 == 3 and not FIXED.is_set()):
        run.degrade("low_confidence", path="summary", message="the model was unsure")
    return {"id": item.id}


def keys(ending: tuple[int, ...]) -> list[str]:
    return [f"acme-{n:05d}" for n in range(ITEMS) if n % 10 in ending]


def cli_json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    capsys.readouterr()
    assert cli_main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def cli_text(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    capsys.readouterr()
    assert cli_main(list(args)) == 0
    return capsys.readouterr().out


@pytest.fixture(autouse=True)
def _not_fixed() -> None:
    FIXED.clear()


def test_two_replays_leave_a_tenant_with_its_items_counted_once_by_their_latest_outcome(
    rt: Runtime, tenant: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a 40-item run: 28 succeeded, 8 degraded (acme-...3 and ...8), 4 failed (...5)
    original = enrich.map([{"id": k} for k in keys(tuple(range(10)))], tenant=tenant)
    assert original.counts == {"succeeded": 28, "degraded": 8, "failed": 4}

    # When the degraded slice is replayed after a fix (4 of the 8 now succeed), and the slice still
    # degraded is replayed once more (nothing changes)
    FIXED.set()
    first = enrich.replay(run=original.run_id, outcome="degraded")
    assert first.transitions == {"degraded->succeeded": 4, "degraded->degraded": 4}
    second = enrich.replay(run=first.run_id, outcome="degraded")
    assert second.transitions == {"degraded->degraded": 4}
    expected = {"succeeded": 32, "degraded": 4, "failed": 4}

    # Then the tenant still has 40 items, each with its latest outcome, and the 8 replayed beside
    shown = cli_json(capsys, "tenants", "show", tenant)
    assert shown["items"] == expected
    assert sum(shown["items"].values()) == ITEMS
    assert (shown["replayed"], shown["runs"], shown["replay_runs"]) == (8, 3, 2)
    text = cli_text(capsys, "tenants", "show", tenant)
    assert "40: succeeded 32, degraded 4, failed 4 (8 replayed)" in text
    assert "3 (2 of them replays)" in text
    listed = {t["tenant"]: t for t in cli_json(capsys, "tenants", "list")}[tenant]
    assert (listed["items"], listed["replayed"]) == (expected, 8)

    # and each run still counts its own items (a replay run is a run)
    assert RunResult.load(original.run_id, tenant).counts["degraded"] == 8
    assert (first.total, second.total) == (8, 4)

    # and cross-run clusters hold each item once, in the cluster of its current outcome
    clusters = cli_json(capsys, "failures", "--tenant", tenant)
    assert [(c["outcome"], c["items"]) for c in clusters] == [("degraded", 4), ("failed", 4)]
    degraded, failed = clusters
    assert degraded["sample_keys"] == keys((8,))[:3]  # three different items, not one three times
    assert len(set(degraded["sample_item_ids"])) == 3
    assert failed["sample_keys"] == keys((5,))[:3]
    by_python = papayya.clusters(tenant=tenant)
    assert [(c.outcome, c.items) for c in by_python] == [("degraded", 4), ("failed", 4)]
    # (one run's clusters are that run's own items)
    assert [c.items for c in papayya.clusters(run_id=original.run_id)] == [8, 4]

    # and the dashboard's API and tenant page say the same
    with TestClient(create_app(None), base_url="http://127.0.0.1:8177") as c:
        api = c.get(f"/api/tenants/{tenant}").json()
        assert (api["items"], api["replayed"]) == (expected, 8)
        row = {t["tenant"]: t for t in c.get("/api/tenants").json()}[tenant]
        assert (row["items"], row["replayed"]) == (expected, 8)
        page = c.get(f"/tenants/{tenant}").text
        # (the outcome legend: "of 40 items", not 52, the 40 and 8 + 4 replay items)
        assert re.findall(r"of ([\d,]+) (?:finished )?items", page) == ["40"]


def test_the_latest_conclusion_counts_and_an_unfinished_or_cancelled_replay_does_not(
    rt: Runtime, tenant: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given one degraded item, replayed and fixed
    original = enrich.map([{"id": "acme-00003"}, {"id": "acme-00001"}], tenant=tenant)
    assert original.counts == {"succeeded": 1, "degraded": 1, "failed": 0}
    FIXED.set()
    enrich.replay(run=original.run_id, outcome="degraded")
    assert cli_json(capsys, "tenants", "show", tenant)["items"] == {"succeeded": 2}

    # When it is replayed again, but that replay has not run yet (queued), or was cancelled
    (fixed_item,) = [i for i in original.items() if i.key == "acme-00001"]
    queued = papayya.replay(item=fixed_item.item_id, execute=False)
    assert queued.counts.get("queued") == 1

    # Then the item keeps the outcome it last concluded with
    shown = cli_json(capsys, "tenants", "show", tenant)
    assert (shown["items"], shown["replayed"]) == ({"succeeded": 2}, 2)
    with psycopg.connect(rt.store.url) as conn:  # papayya has no `cancel` yet: as it would leave it
        conn.execute(
            "UPDATE papayya.items SET status = 'cancelled', finished_at = now() WHERE run_id = %s",
            (queued.run_id,),
        )
    assert cli_json(capsys, "tenants", "show", tenant)["items"] == {"succeeded": 2}
