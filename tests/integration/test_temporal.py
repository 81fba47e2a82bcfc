"""papayya on a real Temporal dev server: headers, outcomes and costs, retries, the pause gate, replay.

Workers run in this process on the harness's event loop, with ``papayya_temporal.Interceptor()`` on
their client; ``map()`` runs with ``PAPAYYA_BACKEND=temporal`` and starts ``MapItems``. LLM calls go
through the real openai client to papayya's FakeProvider, whose request log proves what was paid.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

from temporalio import activity, workflow
from temporalio.client import WorkflowExecutionStatus

# Temporal re-imports this module in its workflow sandbox (the test workflows live here): everything
# that is not workflow code is passed through.
with workflow.unsafe.imports_passed_through():
    import openai
    import psycopg
    import pytest
    import temporalio.worker

    import papayya
    import papayya_openai
    import papayya_temporal
    from papayya import agent
    from papayya.runtime import Runtime, get_runtime
    from papayya.testing import FakeProvider
    from papayya_temporal import MapItems, Stamp, current_stamp, stamped, workflow_id
    from papayya_temporal.config import TemporalUnavailable
    from tests.integration.test_temporal_env import TemporalHarness, temporal

__all__ = ["temporal"]

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

MODEL = "gpt-4o-mini"
PRICE = {"input_mtok": "1000", "output_mtok": "1000"}  # $1 per 1,000 tokens: costs easy to read

# What the module-level activities use: the instrumented client of the test's fake provider, and
# per-test knobs. Activities must be module-level functions for Temporal to register them by name.
state: dict[str, Any] = {}
_lock = threading.Lock()


def _client() -> openai.AsyncOpenAI:
    return state["client"]  # type: ignore[no-any-return]


@activity.defn
@agent(retries=3, backoff=0)
async def enrich_activity(item: papayya.Item) -> dict[str, Any]:
    if item.id in state.get("broken", ()):
        raise KeyError(f"no field {item.id}")
    with _lock:
        failures = state.setdefault("flaky", Counter())
        if failures[item.id] < state.get("fail_times", {}).get(item.id, 0):
            failures[item.id] += 1
            raise ConnectionError("the CRM dropped the connection")
    reply = await _client().chat.completions.create(
        model=MODEL,
        max_tokens=20,
        messages=[{"role": "user", "content": f"enrich {item.id}"}],
    )
    answer = {"id": item.id, "summary": reply.choices[0].message.content}
    if state.get("two_calls"):
        second = await _client().chat.completions.create(
            model=MODEL,
            max_tokens=20,
            messages=[{"role": "user", "content": f"check {item.id}"}],
        )
        answer["check"] = second.choices[0].message.content
    answer["temporal_attempt"] = activity.info().attempt
    return answer


@activity.defn
async def probe() -> dict[str, Any]:
    """A plain activity: reports the stamp it was given."""
    stamp = current_stamp.get()
    return {} if stamp is None else {"tenant": stamp.tenant_id, "item": stamp.item_id, "key": stamp.key}


@workflow.defn(name="papayya-test.Child")
class Child:
    @workflow.run
    async def run(self) -> dict[str, Any]:
        return await workflow.execute_activity(probe, start_to_close_timeout=timedelta(seconds=30))


@workflow.defn(name="papayya-test.Parent")
class Parent:
    @workflow.run
    async def run(self) -> dict[str, Any]:
        stamp = current_stamp.get()
        seen = {"workflow": None if stamp is None else stamp.tenant_id}
        seen["activity"] = await workflow.execute_activity(
            probe, start_to_close_timeout=timedelta(seconds=30)
        )
        seen["child"] = await workflow.execute_child_workflow(
            Child.run, id=f"{workflow.info().workflow_id}-c"
        )
        return seen


@activity.defn
@agent
async def team_enrich(item: Any) -> dict[str, Any]:
    """An agent activity a team's own workflow calls with its own argument (no papayya item)."""
    reply = await _client().chat.completions.create(
        model=MODEL, max_tokens=20, messages=[{"role": "user", "content": f"enrich {item['doc']}"}]
    )
    return {"doc": item["doc"], "summary": reply.choices[0].message.content}


@workflow.defn(name="papayya-test.TeamEnrich")
class TeamEnrich:
    @workflow.run
    async def run(self, doc: str) -> dict[str, Any]:
        return await workflow.execute_activity(  # type: ignore[no-any-return]
            team_enrich, {"doc": doc}, start_to_close_timeout=timedelta(seconds=30)
        )


class Recorder(temporalio.worker.Interceptor):
    """A team's own worker interceptor, inside papayya's: it records the activities it sees run."""

    seen: list[str] = []

    def intercept_activity(
        self, next: temporalio.worker.ActivityInboundInterceptor
    ) -> temporalio.worker.ActivityInboundInterceptor:
        return _RecordingInbound(next)


class _RecordingInbound(temporalio.worker.ActivityInboundInterceptor):
    async def execute_activity(self, input: temporalio.worker.ExecuteActivityInput) -> Any:
        Recorder.seen.append(activity.info().activity_type)
        return await self.next.execute_activity(input)


# -- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture
def queue(rt: Runtime, temporal: TemporalHarness, monkeypatch: pytest.MonkeyPatch) -> str:
    """A task queue of its own, and papayya configured to run map() on Temporal through it (a new
    runtime: use ``get_runtime()`` in tests, not ``rt``)."""
    name = f"papayya-test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("PAPAYYA_TEMPORAL_ADDRESS", temporal.address)
    monkeypatch.setenv("PAPAYYA_TEMPORAL_TASK_QUEUE", name)
    papayya.configure(backend="temporal")
    return name


@pytest.fixture
def llm(fake: FakeProvider) -> Iterator[FakeProvider]:
    state.clear()
    client = openai.AsyncOpenAI(base_url=fake.openai_url, api_key="test", max_retries=0)
    state["client"] = papayya_openai.instrument(client)
    yield fake
    state.clear()


@pytest.fixture
def enrich_worker(temporal: TemporalHarness, queue: str, llm: FakeProvider) -> Iterator[Any]:
    with temporal.worker(queue, activities=[enrich_activity], workflows=[MapItems]) as w:
        yield w


def priced(tenant: str, budget: str | None = None) -> None:
    papayya.tenants.add(tenant)
    papayya.tenants.set_price(tenant, "openai", MODEL, **PRICE)
    if budget is not None:
        papayya.tenants.set_budget(tenant, budget, "month")


def attempts(rt: Runtime, tenant: str) -> dict[str, list[tuple[int, str, str]]]:
    with psycopg.connect(get_runtime().store.url) as conn:
        rows = conn.execute(
            "SELECT i.key, a.number, a.status, a.backend FROM papayya.attempts a "
            "JOIN papayya.items i USING (item_id) WHERE a.tenant_id = %s ORDER BY i.key, a.number",
            (tenant,),
        ).fetchall()
    found: dict[str, list[tuple[int, str, str]]] = {}
    for key, number, status, backend in rows:
        found.setdefault(key, []).append((number, status, backend))
    return found


# -- tests ------------------------------------------------------------------------------------------


def test_the_stamp_travels_from_the_client_through_the_workflow_to_activities_and_children(
    temporal: TemporalHarness,
) -> None:
    tq = f"papayya-test-{uuid.uuid4().hex[:8]}"
    item = uuid.uuid4()
    with temporal.worker(tq, activities=[probe], workflows=[Parent, Child]):
        client = temporal.client()

        async def start() -> dict[str, Any]:
            with stamped("t-acme", run_id=uuid.uuid4(), item_id=item, key="acme.com"):
                return await client.execute_workflow(  # type: ignore[no-any-return]
                    Parent.run, id=f"parent-{uuid.uuid4().hex[:6]}", task_queue=tq
                )

        seen = temporal.call(start())
        plain = temporal.call(
            client.execute_workflow(Parent.run, id=f"parent-{uuid.uuid4().hex[:6]}", task_queue=tq)
        )
    expected = {"tenant": "t-acme", "item": str(item), "key": "acme.com"}
    assert seen == {"workflow": "t-acme", "activity": expected, "child": expected}
    # Without a stamp nothing is invented
    assert plain == {"workflow": None, "activity": {}, "child": {}}


def test_each_item_is_an_attempt_with_its_outcome_and_cost_on_temporal(
    rt: Runtime, tenant: str, enrich_worker: Any, llm: FakeProvider
) -> None:
    # Given a priced tenant and one item whose code is broken
    priced(tenant)
    state["broken"] = {"i3"}
    llm.stop_with("length", when=lambda r: "i4" in r.last_user_message)

    # When the batch runs on Temporal
    result = enrich_activity.map([{"id": f"i{n}"} for n in range(6)], tenant=tenant, concurrency=3)

    # Then every item has its outcome, cost and a temporal attempt
    assert result.counts == {"succeeded": 4, "degraded": 1, "failed": 1}
    assert result.llm_calls == 5
    assert llm.count == 5
    by_key = {i.key: i for i in result.items()}
    assert by_key["i3"].status == "failed"
    assert by_key["i4"].status == "degraded"
    assert all(by_key[k].cost_usd > 0 for k in ("i0", "i1", "i2", "i4", "i5"))
    assert result.cost_usd == sum((i.cost_usd or Decimal(0)) for i in result.items())
    seen = attempts(rt, tenant)
    assert {k: [(n, s) for n, s, _ in v] for k, v in seen.items()} == {
        "i0": [(1, "succeeded")],
        "i1": [(1, "succeeded")],
        "i2": [(1, "succeeded")],
        "i3": [(1, "failed")],
        "i4": [(1, "degraded")],
        "i5": [(1, "succeeded")],
    }
    assert {b for v in seen.values() for _, _, b in v} == {"temporal"}


def test_an_activity_that_fails_twice_then_succeeds_is_one_item_with_three_attempts(
    rt: Runtime, tenant: str, enrich_worker: Any, llm: FakeProvider
) -> None:
    priced(tenant)
    state["fail_times"] = {"flaky": 2}

    result = enrich_activity.map([{"id": "flaky"}, {"id": "steady"}], tenant=tenant)

    assert result.counts == {"succeeded": 2, "degraded": 0, "failed": 0}
    seen = attempts(rt, tenant)
    assert [(n, s) for n, s, _ in seen["flaky"]] == [(1, "failed"), (2, "failed"), (3, "succeeded")]
    assert [(n, s) for n, s, _ in seen["steady"]] == [(1, "succeeded")]
    # Temporal retried the same activity: its third attempt is papayya's third attempt
    (flaky,) = [i for i in result.items() if i.key == "flaky"]
    output = get_runtime().store.item_detail(flaky.item_id)["output"]
    assert output["temporal_attempt"] == 3
    assert llm.count == 2  # the failures came before the LLM call


def test_the_pause_gate_holds_the_workflow_and_resume_pays_no_recorded_call_again(
    rt: Runtime, tenant: str, enrich_worker: Any, llm: FakeProvider, temporal: TemporalHarness
) -> None:
    # Given a tenant with room for a few calls, and items that make two calls each
    priced(tenant, budget="0.05")  # the batch needs about $0.19
    state["two_calls"] = True
    items = [{"id": f"p{n:02d}"} for n in range(12)]

    # When the batch runs, it pauses instead of failing
    paused = enrich_activity.map(items, tenant=tenant, concurrency=2)
    assert paused.status == "paused"
    assert paused.counts["failed"] == 0
    client = temporal.client(interceptor=False)
    handle = client.get_workflow_handle(workflow_id(paused.run_id))
    described = temporal.call(handle.describe())
    assert described.status == WorkflowExecutionStatus.RUNNING  # waiting at the gate, not failed
    assert temporal.call(handle.query(MapItems.state))["paused"] is True
    billed_before = Counter(k for k in llm.idempotency_keys)

    # Then resuming after the budget is raised signals that same workflow and finishes the run
    papayya.tenants.set_budget(tenant, "100")
    done = enrich_activity.resume(paused.run_id)
    assert done.status == "completed"
    assert done.counts == {"succeeded": 12, "degraded": 0, "failed": 0}
    after = temporal.call(handle.describe())
    assert after.run_id == described.run_id  # signalled, not started again
    assert after.status == WorkflowExecutionStatus.COMPLETED
    billed = Counter(k for k in llm.idempotency_keys)
    assert all(n == 1 for n in billed.values()), "a recorded call was paid again"
    assert len(billed) == 24
    assert set(billed_before) <= set(billed)


def test_a_replay_of_items_that_ran_on_temporal_starts_a_new_execution_for_exactly_those(
    rt: Runtime, tenant: str, enrich_worker: Any, llm: FakeProvider, temporal: TemporalHarness
) -> None:
    priced(tenant)
    state["broken"] = {"b1", "b2"}
    first = enrich_activity.map([{"id": k} for k in ("a1", "b1", "a2", "b2", "a3")], tenant=tenant)
    assert first.counts["failed"] == 2

    state["broken"] = set()
    replayed = enrich_activity.replay(run=first.run_id, outcome="failed")

    assert replayed.counts == {"succeeded": 2, "degraded": 0, "failed": 0}
    assert sorted(i.key for i in replayed.items()) == ["b1", "b2"]
    handle = temporal.client(interceptor=False).get_workflow_handle(workflow_id(replayed.run_id))
    assert temporal.call(handle.result()) == {"succeeded": 2}


def test_an_unreachable_server_is_one_sentence(
    rt: Runtime, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAPAYYA_TEMPORAL_ADDRESS", "127.0.0.1:9")
    papayya.configure(backend="temporal")
    with pytest.raises(
        TemporalUnavailable, match=r"^Cannot reach the Temporal server at 127\.0\.0\.1:9"
    ) as err:
        enrich_activity.map([{"id": "x"}], tenant=tenant)
    assert "\n" not in str(err.value)


def test_a_forged_stamp_is_refused_and_runs_nothing(
    rt: Runtime, tenant: str, enrich_worker: Any, llm: FakeProvider, queue: str, temporal: TemporalHarness
) -> None:
    from temporalio.client import WorkflowFailureError

    client = temporal.client()

    async def start() -> Any:
        with stamped(tenant, run_id=uuid.uuid4(), item_id=uuid.uuid4(), key="nope"):
            return await client.execute_workflow(
                "papayya.MapItems",
                papayya_temporal.MapJob(
                    run_id=str(uuid.uuid4()),
                    tenant_id=tenant,
                    activity="enrich_activity",
                    items=[[str(uuid.uuid4()), "nope"]],
                ),
                id=f"forged-{uuid.uuid4().hex[:6]}",
                task_queue=queue,
            )

    assert temporal.call(start()) == {"refused": 1}
    assert llm.count == 0
    # a Stamp that names no item is not run as one
    with pytest.raises(WorkflowFailureError):
        temporal.call(
            client.execute_workflow(
                "papayya.MapItems",
                papayya_temporal.MapJob(run_id="x", tenant_id=tenant, activity="missing", items=[["a", "a"]]),
                id=f"missing-{uuid.uuid4().hex[:6]}",
                task_queue=queue,
            )
        )
    assert Stamp(tenant_id="t").mode == "item"


def test_a_teams_own_workflow_calling_an_agent_activity_is_accounted_or_refused(
    rt: Runtime, tenant: str, temporal: TemporalHarness, llm: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    from temporalio.client import WorkflowFailureError

    tq = f"papayya-test-{uuid.uuid4().hex[:8]}"
    priced(tenant)
    client = temporal.client()
    Recorder.seen.clear()
    with temporal.worker(tq, activities=[team_enrich], workflows=[TeamEnrich], inner=[Recorder()]):

        async def start(doc: str, *, tenant_id: str | None) -> Any:
            if tenant_id is None:
                return await client.execute_workflow(
                    TeamEnrich.run, doc, id=f"team-{uuid.uuid4().hex[:6]}", task_queue=tq
                )
            with stamped(tenant_id):
                return await client.execute_workflow(
                    TeamEnrich.run, doc, id=f"team-{uuid.uuid4().hex[:6]}", task_queue=tq
                )

        # Given the team's workflow started for a tenant (stamped, no item): the call is an item
        out = temporal.call(start("acme.com", tenant_id=tenant))
        assert out["doc"] == "acme.com"
        # Without any tenant, the agent activity is refused before it pays (one sentence)
        with pytest.raises(WorkflowFailureError):
            temporal.call(start("nobody.com", tenant_id=None))
    assert llm.count == 1
    with psycopg.connect(get_runtime().store.url, autocommit=True) as conn:
        items = conn.execute(
            "SELECT status, cost_usd FROM papayya.items WHERE tenant_id = %s", (tenant,)
        ).fetchall()
        calls = conn.execute(
            "SELECT count(*) FROM papayya.llm_calls WHERE tenant_id = %s", (tenant,)
        ).fetchone()
    assert [s for s, _ in items] == ["succeeded"]
    assert items[0][1] > 0
    assert calls == (1,)
    # and the team's own interceptor, inside papayya's, saw the agent activity run
    assert "team_enrich" in Recorder.seen
