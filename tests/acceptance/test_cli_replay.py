"""Failure clusters and replay from the command line, as a user meets them: a batch script run with
``python``, its failures listed with ``papayya failures``, replayed with ``papayya replay`` (fresh, or
from the journal for nothing), and the attempts compared with ``papayya items show``.

The agent is a user's script in a temporary directory. Its outcome depends only on the item id: of
every ten items, ids ending in 3, 7 or 9 come back without a summary (degraded by the output model),
4 is degraded as low confidence, 6 and 8 fail with one ValueError, 0 needs no model call at all, the
rest succeed. Each model call it pays for is a line in ``calls.log``. ``BATCH_FIXED=1`` is the user's
fix for the missing summary.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.acceptance.test_cli import assert_one_sentence, ok_json, ok_text, papayya, papayya_all
from tests.acceptance.test_cli_budgets import billed, run_batch

BATCH = '''
"""A user's batch: each item gets a summary from the model; some come back short, some break."""

import os
import sys
import threading
from pathlib import Path

from pydantic import BaseModel

from papayya import agent, run

CALLS = Path(__file__).with_name("calls.log")
FIXED = os.environ.get("BATCH_FIXED") == "1"  # the fix for the missing summary
_lock = threading.Lock()


class Summary(BaseModel):
    title: str
    summary: str
    words: int


def fake_llm(*, prompt: str) -> dict:
    """An OpenAI-shaped reply; each call billed is a line in calls.log."""
    with _lock, CALLS.open("a") as log:
        log.write(prompt + "\\n")
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": prompt.upper()}}
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 20, "total_tokens": 32},
    }


@agent(output=Summary)
def summarise(item):
    shape = int(item.id[1:]) % 10
    if shape == 0:
        return {"title": item["title"], "summary": item["title"], "words": 2}  # no model needed
    reply = run.llm("summary", provider="openai", model="gpt-4o-mini", max_tokens=20)(
        fake_llm, prompt=f"summarise {item.id}"
    )
    text = reply["choices"][0]["message"]["content"]
    if shape in (6, 8):
        raise ValueError(f"cannot parse the reply for item {item.id!r}")
    if shape == 4:
        run.degrade("low_confidence", path="summary", message="the model was unsure")
    if shape in (3, 7, 9) and not FIXED:
        return {"title": item["title"], "words": len(text.split())}
    return {"title": item["title"], "summary": text, "words": len(text.split())}


if __name__ == "__main__":
    items = [{"id": f"i{n:02d}", "title": f"title {n}"} for n in range(20)]
    print(summarise.map(items, tenant=sys.argv[1]))
'''

MISSING = [f"i{n:02d}" for n in range(20) if n % 10 in (3, 7, 9)]
LOW = [f"i{n:02d}" for n in range(20) if n % 10 == 4]
FAILED = [f"i{n:02d}" for n in range(20) if n % 10 in (6, 8)]
NO_LLM = [f"i{n:02d}" for n in range(20) if n % 10 == 0]
CALL_USD = "0.0000138"  # 12 input and 20 output tokens of gpt-4o-mini at the public price


@pytest.fixture
def batch(tmp_path: Path) -> Path:
    script = tmp_path / "project" / "batch.py"
    script.parent.mkdir()
    script.write_text(BATCH, encoding="utf-8")
    return script


@pytest.fixture
def original(cli_env: dict[str, str], batch: Path, tenant: str) -> str:
    """The id of the batch's run: 8 succeeded, 8 degraded (two ways), 4 failed (one way)."""
    printed = run_batch(cli_env, batch, tenant)
    assert "succeeded 8, degraded 8, failed 4 of 20 items" in printed
    (row,) = ok_json(papayya(cli_env, "runs", "list", "--tenant", tenant, "--json"))
    return str(row["run_id"])


def keys_of(listing: dict[str, object]) -> list[str]:
    items = listing["items"]
    assert isinstance(items, list)
    return [i["key"] for i in items]


def test_failures_lists_a_runs_three_clusters_with_counts_cost_and_samples(
    cli_env: dict[str, str], original: str, tenant: str
) -> None:
    by_run, by_tenant, text, elsewhere = papayya_all(
        cli_env,
        ["failures", original, "--json"],
        ["failures", "--tenant", tenant, "--since", "1h", "--json"],
        ["failures", original],
        ["failures", "--agent", "no.such.agent"],
    )

    clusters = ok_json(by_run)
    assert [(c["outcome"], c["label"], c["items"]) for c in clusters] == [
        ("degraded", "schema.missing_field: summary", 6),
        ("failed", "ValueError cannot parse the reply for item <str> in batch.py:summarise (user)", 4),
        ("degraded", "low_confidence: summary", 2),
    ]
    missing, failed, low = clusters
    assert (missing["tenants"], missing["cost_usd"]) == (1, "0.0000828")  # 6 calls at $0.0000138
    assert missing["sample_keys"] == MISSING[:3]
    assert failed["sample_keys"] == FAILED[:3]
    assert low["sample_keys"] == LOW
    assert len(missing["sample_item_ids"]) == 3
    assert ok_json(by_tenant) == clusters  # the tenant has only this run
    out = ok_text(text)
    for c in clusters:
        assert c["cluster"] in out
    assert f"papayya replay --run {original} --cluster CLUSTER" in out
    assert ok_text(elsewhere) == "No degraded or failed items in any run of agent 'no.such.agent'.\n"


def test_replay_of_the_degraded_items_is_a_new_run_and_the_original_is_untouched(
    cli_env: dict[str, str], batch: Path, original: str, tenant: str
) -> None:
    before, attempts_before = papayya_all(
        cli_env, ["items", "list", original, "--json"], ["runs", "show", original, "--json"]
    )
    degraded = sorted(MISSING + LOW)

    # When the user fixed the missing summary and replays the degraded items fresh
    replayed = ok_json(
        papayya(cli_env, "replay", "--run", original, "--outcome", "degraded", "--json", BATCH_FIXED="1")
    )
    new = str(replayed["run_id"])

    shown, listing, after, original_shown, text = papayya_all(
        cli_env,
        ["runs", "show", new, "--json"],
        ["items", "list", new, "--json"],
        ["items", "list", original, "--json"],
        ["runs", "show", original, "--json"],
        ["runs", "show", new],
    )
    # Then the new run holds exactly the degraded items, linked to the original
    detail = ok_json(shown)
    assert detail == replayed
    assert (detail["total"], detail["replayed_from"]) == (8, original)
    assert (detail["replay_slice"], detail["from_journal"]) == ({"outcome": "degraded"}, False)
    assert detail["transitions"] == {"degraded->succeeded": 6, "degraded->degraded": 2}
    assert detail["counts"] == {"succeeded": 6, "degraded": 2, "failed": 0}
    assert sorted(keys_of(ok_json(listing))) == degraded
    # and it paid for one new call per degraded item
    assert billed(batch) - _first_run_calls() == {f"summarise {k}": 1 for k in degraded}
    # And the original run's items and attempts did not change
    assert ok_json(after) == ok_json(before)
    summary = ok_json(original_shown)
    assert summary["counts"] == ok_json(attempts_before)["counts"]
    assert [(r["run_id"], r["total"], r["transitions"]) for r in summary["replays"]] == [
        (new, 8, {"degraded->succeeded": 6, "degraded->degraded": 2})
    ]
    assert [c["items"] for c in summary["clusters"]] == [6, 4, 2]
    out = ok_text(text)
    assert f"replay of    {original} (slice: outcome degraded, 8 items; fresh)" in out
    assert "then -> now  degraded->succeeded 6, degraded->degraded 2" in out


def _first_run_calls() -> Counter[str]:
    return Counter(f"summarise i{n:02d}" for n in range(20) if n % 10 != 0)


def test_replay_of_a_cluster_from_the_journal_bills_nothing(
    cli_env: dict[str, str], batch: Path, original: str
) -> None:
    (failed,) = [
        c for c in ok_json(papayya(cli_env, "failures", original, "--json")) if c["outcome"] == "failed"
    ]
    calls = billed(batch)

    printed = ok_text(
        papayya(cli_env, "replay", "--run", original, "--cluster", failed["cluster"], "--from-journal")
    )

    assert billed(batch) == calls
    new = printed.split()[1]
    detail, text = papayya_all(cli_env, ["runs", "show", new, "--json"], ["runs", "show", original])
    d = ok_json(detail)
    assert (d["total"], d["replayed_from"], d["from_journal"]) == (4, original, True)
    assert d["replay_slice"] == {"cluster": failed["cluster"]}
    assert (d["llm_calls"], d["cost_usd"]) == (0, "0")
    assert d["transitions"] == {"failed->failed": 4}
    assert [c["cluster"] for c in d["clusters"]] == [failed["cluster"]]  # the same bug, the same shape
    assert f"cluster {failed['cluster']}, 4 items; from the journal" in ok_text(text)


def test_items_show_puts_the_original_and_its_replay_side_by_side_with_a_diff(
    cli_env: dict[str, str], original: str
) -> None:
    item = ok_json(papayya(cli_env, "items", "show", MISSING[0], "--run", original, "--json"))
    assert [len(entry["attempts"]) for entry in item["lineage"]] == [1]  # no replays yet

    replayed = ok_json(papayya(cli_env, "replay", "--item", item["item_id"], "--json", BATCH_FIXED="1"))
    new = str(replayed["run_id"])
    assert (replayed["total"], replayed["replay_slice"]) == (1, {"item": item["item_id"], "key": MISSING[0]})

    as_json, text, from_replay = papayya_all(
        cli_env,
        ["items", "show", item["item_id"], "--json"],
        ["items", "show", item["item_id"]],
        ["items", "show", MISSING[0], "--run", new, "--json"],
    )
    lineage = ok_json(as_json)["lineage"]
    assert [(e["run_id"], e["status"]) for e in lineage] == [(original, "degraded"), (new, "succeeded")]
    first, second = (e["attempts"][0] for e in lineage)
    assert (first["status"], first["steps"], first["llm_calls"], first["cost_usd"]) == (
        "degraded",
        1,
        1,
        CALL_USD,
    )
    assert first["reasons"][0]["code"] == "schema.missing_field"
    assert (second["status"], second["steps"], second["llm_calls"]) == ("succeeded", 1, 1)
    assert first["output_diff"] is None
    diff = second["output_diff"].splitlines()
    assert diff[:2] == [f"--- run {original} attempt 1", f"+++ run {new} attempt 1"]
    assert f'+  "summary": "SUMMARISE {MISSING[0].upper()}",' in diff
    assert ok_json(from_replay)["lineage"] == lineage  # the same story from either end

    out = ok_text(text)
    assert "this item and its replays (2 items, 2 attempts)" in out
    assert original in out
    assert new in out
    assert f'+  "summary": "SUMMARISE {MISSING[0].upper()}",' in out


def test_replay_refuses_bad_input_in_one_sentence_and_creates_nothing(
    cli_env: dict[str, str], original: str, tenant: str
) -> None:
    other = f"{tenant}-other"
    ok_text(papayya(cli_env, "tenants", "add", other))
    item = ok_json(papayya(cli_env, "items", "show", FAILED[0], "--run", original, "--json"))["item_id"]
    no_llm = ok_json(papayya(cli_env, "items", "show", NO_LLM[0], "--run", original, "--json"))["item_id"]
    nobody = "00000000-0000-4000-8000-000000000000"

    results = papayya_all(
        cli_env,
        ["replay", "--item", nobody],
        ["replay", "--run", nobody, "--outcome", "degraded"],
        ["replay", "--run", original, "--cluster", "0123456789abcdef"],
        ["replay", "--item", item, "--tenant", other],
        ["replay", "--run", original, "--tenant", other],
        ["replay", "--run", original, "--outcome", "cancelled"],
        ["replay", "--run", original, "--ids", "i98,i99"],
        ["replay", "--item", no_llm, "--from-journal"],
        ["replay", "--item", item, "--outcome", "failed"],
        ["replay"],
    )

    expected = [
        (f"No item {nobody}",),
        (f"No run {nobody}",),
        ("No cluster '0123456789abcdef'", f"papayya failures {original}"),
        (f"No item {item}",),
        (f"No run {original}",),
        ("is empty; nothing was created",),
        ("is empty; nothing was created",),
        (f"Item {NO_LLM[0]!r} has no recorded steps", "without --from-journal", "Nothing was created"),
        ("give them with --run, not --item",),
        ("Say what to replay",),
    ]
    for result, fragments in zip(results, expected, strict=True):
        assert_one_sentence(result, *fragments)
    assert [r["run_id"] for r in ok_json(papayya(cli_env, "runs", "list", "--tenant", tenant, "--json"))] == [
        original
    ]


def test_failures_refuses_an_unknown_run_or_tenant_and_says_when_there_are_none(
    cli_env: dict[str, str], original: str, tenant: str
) -> None:
    nobody = "00000000-0000-4000-8000-000000000000"
    other = f"{tenant}-other"
    ok_text(papayya(cli_env, "tenants", "add", other))
    unknown_run, unknown_tenant, other_tenant, none_yet = papayya_all(
        cli_env,
        ["failures", nobody],
        ["failures", "--tenant", f"{tenant}-nobody"],
        ["failures", original, "--tenant", other],
        ["failures", original, "--until", "2000-01-01"],
    )
    assert_one_sentence(unknown_run, f"No run {nobody}")
    assert_one_sentence(unknown_tenant, "does not exist")
    assert_one_sentence(other_tenant, f"No run {original}")
    assert ok_text(none_yet) == f"No degraded or failed items in run {original} before 2000-01-01 00:00Z.\n"
