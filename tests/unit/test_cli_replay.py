"""How the CLI describes replays without a database: output diffs, an item's lineage, slices and the
then -> now rollup."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

from rich.console import Console

from papayya.cli import render
from papayya.cli.items import lineage
from papayya.cli.params import KEYS
from papayya.cli.runs import slice_text, transitions_text


def test_an_output_diff_is_pretty_json_with_sorted_keys_and_empty_when_nothing_changed() -> None:
    before = {"words": 2, "title": "t", "tags": ["a"]}
    after = {"title": "t", "summary": "S", "tags": ["a", "b"], "words": 2}

    diff = render.output_diff(before, after, before_label="run A attempt 1", after_label="run B attempt 1")

    assert diff.splitlines() == [
        "--- run A attempt 1",
        "+++ run B attempt 1",
        "@@ -1,6 +1,8 @@",
        " {",
        '+  "summary": "S",',
        '   "tags": [',
        '-    "a"',
        '+    "a",',
        '+    "b"',
        "   ],",
        '   "title": "t",',
        '   "words": 2',
    ]
    reordered = {"words": 2, "tags": ["a"], "title": "t"}
    assert render.output_diff(before, reordered, before_label="a", after_label="b") == ""


def test_an_output_diff_shows_decimals_and_ids_as_the_json_does() -> None:
    item = UUID("0b6f5a4e-8a51-4c1e-9f0d-3c2f0e1d2a3b")
    diff = render.output_diff(
        {"price": Decimal("1.50"), "id": item},
        {"price": Decimal("1.5"), "id": item},
        before_label="a",
        after_label="b",
    )
    assert diff == ""  # the same amount, written the same way


def test_diff_lines_are_shown_not_interpreted_and_coloured_by_kind() -> None:
    diff = "--- a\n+++ b\n@@ -1 +1 @@\n-[bold]old\x1b[2J\n+new"
    text = render.diff_lines(diff)
    console = Console(width=100, color_system=None)
    with console.capture() as captured:
        console.print(text)
    assert captured.get().splitlines() == ["--- a", "+++ b", "@@ -1 +1 @@", "-[bold]old\\x1b[2J", "+new"]
    styles = {text.plain[s.start : s.end].rstrip("\n"): str(s.style) for s in text.spans}
    assert styles["-[bold]old\\x1b[2J"] == "red"
    assert styles["+new"] == "green"


def _attempt(number: int, status: str, output: Any) -> dict[str, Any]:
    return {
        "attempt_id": uuid4(),
        "number": number,
        "status": status,
        "reasons": [],
        "error": {"type": "ValueError"} if status == "failed" else None,
        "fingerprint": None,
        "output": output,
        "cost_usd": Decimal("0.01"),
        "cost_unknown": False,
        "started_at": datetime(2026, 5, 1, tzinfo=UTC),
        "finished_at": datetime(2026, 5, 1, tzinfo=UTC),
    }


def _item(run: str, attempts: list[dict[str, Any]], replayed_from: UUID | None = None) -> dict[str, Any]:
    first = attempts[0]["attempt_id"]
    return {
        "item_id": uuid4(),
        "run_id": run,
        "key": "a-1",
        "tenant_id": "acme",
        "status": attempts[-1]["status"],
        "replayed_from": replayed_from,
        "created_at": datetime(2026, 5, 1, tzinfo=UTC),
        "attempts_detail": attempts,
        "steps": [{"attempt_id": first}, {"attempt_id": first}],
        "llm_calls": [{"attempt_id": first}],
    }


def test_lineage_diffs_consecutive_outputs_across_the_original_and_its_replays() -> None:
    # Given an original that degraded, then failed on retry, and a replay that succeeded twice over
    original = _item("R1", [_attempt(1, "degraded", {"v": 1}), _attempt(2, "failed", None)])
    replay = _item("R2", [_attempt(1, "succeeded", {"v": 2})], replayed_from=original["item_id"])
    again = _item("R3", [_attempt(1, "succeeded", {"v": 2})], replayed_from=original["item_id"])

    entries = lineage(replay, [original, replay, again])

    attempts = [a for e in entries for a in e["attempts"]]
    assert [(a["run_id"], a["number"], a["status"]) for a in attempts] == [
        ("R1", 1, "degraded"),
        ("R1", 2, "failed"),
        ("R2", 1, "succeeded"),
        ("R3", 1, "succeeded"),
    ]
    assert [(a["steps"], a["llm_calls"]) for a in attempts] == [(2, 1), (0, 0), (2, 1), (2, 1)]
    assert attempts[1]["error_type"] == "ValueError"
    # The failed attempt has no output: the replay is compared with the last attempt that had one.
    assert [a["output_diff"] is None for a in attempts] == [True, True, False, False]
    assert attempts[2]["output_diff"].splitlines()[:2] == ["--- run R1 attempt 1", "+++ run R2 attempt 1"]
    assert attempts[3]["output_diff"] == ""


def test_a_replay_slice_and_its_rollup_read_as_a_sentence() -> None:
    assert (
        slice_text({"outcome": "degraded"}, 200, from_journal=False) == "outcome degraded, 200 items; fresh"
    )
    assert (
        slice_text({"cluster": "c0ffee", "keys": ["a", "b"]}, 2, from_journal=True)
        == "cluster c0ffee, ids a, b, 2 items; from the journal"
    )
    assert slice_text({"item": "u", "key": "a-1"}, 1, from_journal=False) == "item a-1, 1 item; fresh"
    assert slice_text({}, 1_200, from_journal=False) == "all 1,200 items; fresh"
    assert (
        transitions_text({"degraded->degraded": 30, "degraded->succeeded": 1500, "degraded->failed": 30})
        == "degraded->succeeded 1,500, degraded->degraded 30, degraded->failed 30"
    )
    assert transitions_text(None) == ""


def test_ids_are_split_on_commas() -> None:
    assert KEYS.convert(" a-17, b-42 ,,c", None, None) == ["a-17", "b-42", "c"]
