"""Clusters and replay on a real store: re-drive exactly what did not work, and nothing else."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from typing import Any

import psycopg
import pytest
from pydantic import BaseModel

import papayya
from papayya import JournalMiss, NotFound, ReplayError, agent, run
from papayya.runtime import Runtime


class Out(BaseModel):
    key: str
    payload: str
    size: int


class Provider:
    """Counts what it billed, by idempotency key."""

    def __init__(self) -> None:
        self.billed: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, *, prompt: str, key: str) -> dict[str, Any]:
        with self._lock:
            self.billed[key] += 1
        return {
            "model": "gpt-4o-mini",
            "usage": {"prompt_tokens": 10, "completion_tokens": 5},
            "choices": [{"finish_reason": "stop", "message": {"content": prompt}}],
        }


def parse(item: papayya.Item) -> str:
    return str(item["body"])


def size_of(text: str) -> int:
    return int(text)


def make_agent(provider: Provider, *, fixed: bool = False, extra_step: bool = False) -> papayya.Agent:
    @agent(output=Out)
    def enrich(item: papayya.Item) -> Any:
        n = int(item.id[1:])
        answer = run.llm("answer", provider="openai", model="gpt-4o-mini", max_tokens=5)(
            provider, prompt=f"about {item.id}", key=run.idempotency_key("answer")
        )
        if extra_step:
            run.llm("second", provider="openai", model="gpt-4o-mini", max_tokens=5)(
                provider, prompt="again", key=run.idempotency_key("second")
            )
        parse(item)  # failure shape D: KeyError on the records without a body
        if n < 100 and not fixed:
            run.tool("lookup")(lambda: None)  # shape A: tool returned None
        if 100 <= n < 160 and not fixed:
            return {"key": item.id, "payload": item["payload"], "sise": 1}  # shape B: hallucinated field
        if 160 <= n < 200 and not fixed:
            run.retrieve(item.id, retriever="empty")  # shape C: nothing retrieved
        if 210 <= n < 220:
            size_of("many")  # failure shape E: ValueError
        return {"key": item.id, "payload": item["payload"], "size": len(answer["choices"])}

    return enrich


@pytest.fixture(autouse=True)
def _empty_retriever() -> None:
    papayya.retriever(lambda q: [], name="empty")


def source_items(n: int) -> list[dict[str, Any]]:
    items = [{"id": f"i{i:05d}", "payload": f"p{i}", "body": "b"} for i in range(n)]
    for it in items[200:210]:
        del it["body"]  # failure shape D: KeyError in parse
    return items


def attempts_of(rt: Runtime, run_id: uuid.UUID) -> list[tuple[Any, ...]]:
    with psycopg.connect(rt.store.url) as conn:
        return conn.execute(
            "SELECT attempt_id, item_id, status, finished_at FROM papayya.attempts "
            "WHERE run_id = %s ORDER BY 1",
            (run_id,),
        ).fetchall()


def test_ten_thousand_items_five_clusters_and_a_replay_of_exactly_the_degraded(
    rt: Runtime, tenant: str
) -> None:
    # Given a 10,000-item run with 200 degraded items of 3 shapes and 20 failures of 2 shapes
    provider = Provider()
    items = source_items(10_000)
    result = make_agent(provider).map(items, tenant=tenant, concurrency=16)
    assert result.counts == {"succeeded": 9_780, "degraded": 200, "failed": 20}

    # Then failures form exactly 5 clusters with exact counts
    found = papayya.clusters(run_id=result.run_id)
    assert sorted((c.outcome, c.items) for c in found) == [
        ("degraded", 40),
        ("degraded", 60),
        ("degraded", 100),
        ("failed", 10),
        ("failed", 10),
    ]
    labels = {c.label for c in found}
    assert "tool_returned_none: lookup" in labels
    assert "retrieval_empty: empty" in labels
    assert "schema.extra_field: sise; schema.missing_field: size" in labels
    assert any(lbl.startswith("KeyError <str> in test_replay.py:parse") for lbl in labels)
    assert any(lbl.startswith("ValueError") and "size_of" in lbl for lbl in labels)
    assert all(c.tenants == 1 and len(c.sample_keys) == 3 for c in found)
    assert [c.cluster for c in result.clusters()] == [c.cluster for c in found]

    # When the degraded slice is replayed a week later, after the source data changed
    for it in items:
        it["payload"] = "edited since"
    before = attempts_of(rt, result.run_id)
    billed_before = sum(provider.billed.values())
    replayed = make_agent(provider, fixed=True).replay(run=result.run_id, outcome="degraded")

    # Then the new run holds exactly those 200 items, from their recorded input, linked to the originals
    assert replayed.total == 200
    assert replayed.replayed_from == result.run_id
    assert replayed.counts == {"succeeded": 200, "degraded": 0, "failed": 0}
    assert replayed.transitions == {"degraded->succeeded": 200}
    assert "replay of" in str(replayed)
    with psycopg.connect(rt.store.url) as conn:
        rows = conn.execute(
            "SELECT n.output ->> 'payload', o.status FROM papayya.items n "
            "JOIN papayya.items o ON o.item_id = n.replayed_from WHERE n.run_id = %s",
            (replayed.run_id,),
        ).fetchall()
    assert len(rows) == 200
    assert all(payload.startswith("p") and status == "degraded" for payload, status in rows)
    # a fresh replay pays again, under new idempotency keys; the other 9,800 items were not touched
    assert sum(provider.billed.values()) == billed_before + 200
    assert all(n == 1 for n in provider.billed.values())
    assert attempts_of(rt, result.run_id) == before


def test_a_from_journal_replay_bills_nothing(rt: Runtime, tenant: str) -> None:
    provider = Provider()
    original = make_agent(provider).map(source_items(230), tenant=tenant)
    cluster = next(c for c in papayya.clusters(run_id=original.run_id) if c.label.startswith("tool"))
    billed = sum(provider.billed.values())

    debug = make_agent(provider).replay(run=original.run_id, cluster=cluster.cluster, from_journal=True)

    assert debug.total == cluster.items == 100
    assert debug.counts["degraded"] == 100  # same recorded answers, same verdict
    assert sum(provider.billed.values()) == billed
    assert debug.cost_usd == 0
    assert debug.llm_calls == 0


def test_a_from_journal_replay_never_calls_a_step_it_has_no_record_of(rt: Runtime, tenant: str) -> None:
    provider = Provider()
    original = make_agent(provider).map(source_items(3), tenant=tenant)
    billed = sum(provider.billed.values())
    changed = make_agent(provider, extra_step=True).replay(
        item=original.items()[0].item_id, from_journal=True
    )
    assert changed.counts["failed"] == 1
    assert changed.items()[0].error_type == JournalMiss.__name__
    assert sum(provider.billed.values()) == billed


def test_replay_of_one_item(rt: Runtime, tenant: str) -> None:
    provider = Provider()
    original = make_agent(provider).map(source_items(5), tenant=tenant)
    target = original.items()[2]
    again = make_agent(provider).replay(item=target.item_id)
    assert again.total == 1
    assert again.items()[0].key == target.key
    lineage = rt.store.item_lineage(again.items()[0].item_id, tenant)
    assert [r["item_id"] for r in lineage] == [target.item_id, again.items()[0].item_id]


def test_bad_replays_are_one_sentence_and_create_nothing(rt: Runtime, tenant: str) -> None:
    provider = Provider()
    original = make_agent(provider).map(source_items(5), tenant=tenant)  # all degraded, none failed
    with psycopg.connect(rt.store.url) as conn:
        runs_before = conn.execute("SELECT count(*) FROM papayya.runs").fetchone()

    with pytest.raises(ReplayError, match="is empty; nothing was created"):
        papayya.replay(run=original.run_id, outcome="failed")
    with pytest.raises(NotFound):
        papayya.replay(item=uuid.uuid4())
    with pytest.raises(NotFound):
        papayya.replay(run=uuid.uuid4())
    with pytest.raises(NotFound, match="No cluster"):
        papayya.replay(run=original.run_id, cluster="feedfacecafebeef")
    with pytest.raises(NotFound):  # another tenant's item, through a tenant-scoped call
        papayya.replay(item=original.items()[0].item_id, tenant="someone-else")
    with pytest.raises(ReplayError, match="not both"):
        papayya.replay(item=original.items()[0].item_id, run=original.run_id)
    with pytest.raises(ReplayError, match="Unknown outcome"):
        papayya.replay(run=original.run_id, outcome="meh")

    @agent
    def no_steps(item: papayya.Item) -> str:
        return "ok"

    bare = no_steps.map([{"id": "a"}], tenant=tenant)
    with pytest.raises(ReplayError, match="has no recorded steps"):
        no_steps.replay(run=bare.run_id, from_journal=True)

    with psycopg.connect(rt.store.url) as conn:
        runs_after = conn.execute("SELECT count(*) FROM papayya.runs").fetchone()
    assert runs_after is not None
    assert runs_before is not None
    assert runs_after[0] == runs_before[0] + 1  # only the no_steps run itself
