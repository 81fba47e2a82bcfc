"""A worker that lost its lease cannot complete the item; bad input records nothing and loses nothing."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import psycopg
import pytest

import papayya
from papayya import InputError, StoreUnavailable, TenantError, agent, execute, reaper, run
from papayya.execute import ItemRef
from papayya.runtime import Runtime, get_runtime


@agent
def echo(item: papayya.Item) -> dict[str, str]:
    return {"id": item.id}


class HeldProvider:
    """An OpenAI-shaped provider that holds each answer until ``answer`` is set: a call on the wire."""

    def __init__(self) -> None:
        self.sent, self.answer = threading.Event(), threading.Event()
        self.billed: list[str] = []

    def __call__(self, *, prompt: str) -> dict[str, Any]:
        self.billed.append(prompt)
        self.sent.set()
        self.answer.wait(30)
        return {
            "model": "gpt-4o-mini",
            "choices": [{"finish_reason": "stop", "message": {"content": prompt.upper()}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2},
        }


def one_item_run(
    rt: Runtime, tenant: str, agent_name: str, backend: str, key: str, input: str = "{}"
) -> tuple[uuid.UUID, uuid.UUID]:
    """A running run of one queued item, written straight to the store: (run id, item id)."""
    run_id, item_id = uuid.uuid4(), uuid.uuid4()
    rt.store.run_create(
        run_id=run_id,
        tenant_id=tenant,
        agent_name=agent_name,
        name=None,
        backend=backend,
        items=[(item_id, key, input)],
        max_attempts=3,
        options={},
    )
    return run_id, item_id


def test_a_stale_lease_cannot_complete_the_item(rt: Runtime, tenant: str) -> None:
    # Given an item claimed by a worker that then froze past its lease
    papayya.tenants.add(tenant)
    run_id, item_id = one_item_run(rt, tenant, "echo", "native", "k")
    ref = ItemRef(item_id, "k", run_id, tenant)
    frozen = execute.begin(rt, echo, ref, backend="native", price_overrides={})
    assert frozen is not None
    # When its lease expires, the reaper gives the item back and a second worker claims it
    with psycopg.connect(rt.store.url, autocommit=True) as conn:
        conn.execute(
            "UPDATE papayya.items SET lease_expires_at = now() - interval '1 second' WHERE item_id = %s",
            (item_id,),
        )
    assert reaper.sweep(rt).requeued == 1
    second = execute.begin(rt, echo, ref, backend="native", price_overrides={})
    assert second is not None
    assert second.lease_token > frozen.lease_token
    # Then the frozen worker's result is rejected and the second worker's stands
    late = execute.conclude(frozen, output={"by": "frozen"})
    assert (late.status, late.discarded) == ("stale", True)
    assert execute.conclude(second, output={"by": "second"}).status == "succeeded"
    detail = rt.store.item_detail(item_id)
    assert detail["output"] == {"by": "second"}
    assert [a["status"] for a in detail["attempts_detail"]] == ["stalled", "succeeded"]


def test_a_heartbeat_that_crosses_a_conclusion_does_not_report_the_attempt_lost(
    rt: Runtime, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Given two attempts a worker holds: one whose result is written while the heartbeat is on its
    # way (the worker's snapshot of what it holds still lists it), one the reaper took from it
    papayya.tenants.add(tenant)
    refs = []
    for key in ("done", "taken"):
        run_id, item_id = one_item_run(rt, tenant, "echo", "native", key)
        refs.append(ItemRef(item_id, key, run_id, tenant))
    done = execute.begin(rt, echo, refs[0], backend="native", price_overrides={})
    taken = execute.begin(rt, echo, refs[1], backend="native", price_overrides={})
    assert done is not None
    assert taken is not None
    assert execute.conclude(done, output={"ok": True}).status == "succeeded"
    with psycopg.connect(rt.store.url, autocommit=True) as conn:
        conn.execute(
            "UPDATE papayya.items SET lease_expires_at = now() - interval '1 second' WHERE item_id = %s",
            (taken.item_id,),
        )
    assert reaper.sweep(rt).requeued == 1
    caplog.clear()
    # When the heartbeat runs over both
    with caplog.at_level("WARNING", logger="papayya"):
        kept = execute.heartbeat(rt, [done, taken], 30)
    # Then only the attempt that was really lost is flagged and reported
    assert kept == set()
    assert (done.abandoned, taken.abandoned) == (False, True)
    lost = [r.getMessage() for r in caplog.records if "lost its lease" in r.getMessage()]
    assert lost == ["item taken: attempt 1 lost its lease; it stops before its next paid call"]


def test_a_dead_workers_buffered_items_go_back_without_a_stall(rt: Runtime, tenant: str) -> None:
    # Given a worker that claimed three items and began only the first (a thread for it, two in its
    # buffer), with one lost worker enough to fail an item
    from papayya.engine.worker import begin_attempts

    papayya.configure(max_stalls=1)
    rt = get_runtime()
    run_id = echo.submit(
        [{"id": "running"}, {"id": "buffered-1"}, {"id": "buffered-2"}], tenant=tenant
    ).run_id
    rows = rt.store.items_claim(agents=[echo.name], run_ids=[run_id], limit=3, worker="w", lease_seconds=30)
    ctxs = {
        row["key"]: execute.context(
            rt,
            echo,
            ItemRef(row["item_id"], row["key"], row["run_id"], row["tenant_id"]),
            attempt_id=row["attempt_id"],
            number=row["attempts"],
            token=row["lease_token"],
            input=row["input"],
            journal=row["journal"],
            failures=row["failures"],
            from_journal=False,
            backend="native",
            price_overrides={},
        )
        for row in rows
    }
    assert begin_attempts(rt, [ctxs["running"]]) == {ctxs["running"].item_id}
    # When the worker dies and its leases expire
    with psycopg.connect(rt.store.url, autocommit=True) as conn:
        conn.execute(
            "UPDATE papayya.items SET lease_expires_at = now() - interval '1 second' WHERE run_id = %s",
            (run_id,),
        )
    swept = reaper.sweep(rt)
    assert swept.released >= 2
    # Then only the item that was running lost its worker (and failed); the buffered ones are queued
    # again as if never claimed: no stall, no attempt
    running = rt.store.item_detail(ctxs["running"].item_id, tenant)
    assert (running["status"], running["error"]["type"]) == ("failed", "WorkerLost")
    assert [a["status"] for a in running["attempts_detail"]] == ["stalled"]
    for key in ("buffered-1", "buffered-2"):
        detail = rt.store.item_detail(ctxs[key].item_id, tenant)
        assert (detail["status"], detail["attempts"], detail["attempts_detail"]) == ("queued", 0, [])
    with psycopg.connect(rt.store.url) as conn:
        stalls = dict(
            conn.execute("SELECT key, stalls FROM papayya.items WHERE run_id = %s", (run_id,)).fetchall()
        )
    assert stalls == {"running": 1, "buffered-1": 0, "buffered-2": 0}
    # And a late begin of a buffered item by the dead worker's claim is refused: its lease is gone
    assert begin_attempts(rt, [ctxs["buffered-1"]]) == set()


def _count_runs(rt: Runtime) -> int:
    with psycopg.connect(rt.store.url) as conn:
        row = conn.execute("SELECT count(*) FROM papayya.runs").fetchone()
        assert row is not None
        return int(row[0])


@pytest.mark.parametrize(
    "items",
    [
        [{"id": "a"}, {"nope": 1}],
        [{"id": "a"}, {"id": "a"}],
        [{"id": "a", "v": object()}],
        [{"id": "a", "blob": "x" * 2_000_000}],
    ],
)
def test_bad_input_records_nothing_and_keeps_what_was_recorded(rt: Runtime, tenant: str, items: list) -> None:
    before = echo.map([{"id": "kept"}], tenant=tenant)
    runs = _count_runs(rt)
    with pytest.raises(InputError):
        echo.map(items, tenant=tenant)
    assert _count_runs(rt) == runs
    again = papayya.RunResult.load(before.run_id, tenant)
    assert again.counts["succeeded"] == 1


def test_unknown_tenant_is_refused_when_configured(rt: Runtime, tenant: str) -> None:
    papayya.configure(unknown_tenants="refuse")
    with pytest.raises(TenantError, match="papayya tenants add"):
        echo.map([{"id": "a"}], tenant=tenant)
    papayya.tenants.add(tenant)
    assert echo.map([{"id": "a"}], tenant=tenant).counts["succeeded"] == 1


@pytest.mark.parametrize("name", ["t'; DROP TABLE papayya.items; --", "テナント-ü", "a" * 128])
def test_awkward_tenant_names_round_trip(rt: Runtime, name: str) -> None:
    result = echo.map([{"id": "a"}], tenant=name)
    assert result.tenant == name
    assert papayya.tenants.get(name).tenant_id == name
    assert echo.map([{"id": "b"}], tenant=name).counts["succeeded"] == 1  # the items table survived


def test_a_10kb_tenant_name_is_refused(rt: Runtime) -> None:
    with pytest.raises(TenantError, match="use at most 128"):
        echo.map([{"id": "a"}], tenant="x" * 10_240)


def test_unreachable_database_is_one_sentence(rt: Runtime) -> None:
    papayya.configure(database_url="postgresql://postgres@127.0.0.1:1/nowhere")
    with pytest.raises(StoreUnavailable) as info:
        echo.map([{"id": "a"}], tenant="t")
    message = str(info.value)
    assert message.startswith("Cannot reach PostgreSQL at")
    assert "start the server or fix PAPAYYA_DATABASE_URL" in message
    assert "\n" not in message


def test_an_unknown_backend_is_one_sentence_before_anything_runs(rt: Runtime) -> None:
    papayya.configure(backend="kafka")
    with pytest.raises(
        papayya.ConfigError, match=r"Unknown backend 'kafka' \(PAPAYYA_BACKEND\); installed: .*native"
    ):
        echo.map([{"id": "a"}], tenant="t")


def test_a_plugin_backend_registered_through_the_hook_runs_map(rt: Runtime, tenant: str) -> None:
    from papayya.engine import NativeBackend

    ran: list[int] = []

    class Counting(NativeBackend):
        name = "counting"

        def run(self, rt: Runtime, agent: papayya.Agent, **kw: object) -> None:  # type: ignore[override]
            ran.append(len(kw["items"]))  # type: ignore[arg-type]
            super().run(rt, agent, **kw)  # type: ignore[arg-type]

    class Plugin:
        @papayya.hookimpl
        def papayya_register_backends(self, register: object) -> None:
            register("counting", Counting)  # type: ignore[operator]

    from papayya import plugins, runtime

    original = plugins.make_plugin_manager

    def with_plugin(**kw: bool) -> object:
        pm = original(**kw)
        pm.register(Plugin())
        return pm

    papayya.configure(backend="counting")
    runtime.make_plugin_manager = with_plugin  # type: ignore[assignment]
    try:
        result = echo.map([{"id": "a"}, {"id": "b"}], tenant=tenant)
    finally:
        runtime.make_plugin_manager = original
    assert ran == [2]
    assert result.counts["succeeded"] == 2
    assert papayya.runtime.get_runtime().store.run_get(result.run_id)["backend"] == "counting"


def test_a_backend_whose_extra_is_missing_is_one_sentence(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    import papayya_celery

    def missing() -> None:
        raise ImportError("papayya_celery needs Celery; install it with: pip install 'papayya[celery]'")

    monkeypatch.setattr(papayya_celery, "require_celery", missing)
    papayya.configure(backend="celery")
    with pytest.raises(
        papayya.ConfigError, match=r"'celery' backend cannot start here: .*'papayya\[celery\]'"
    ):
        echo.map([{"id": "a"}], tenant="t")


def test_an_attempt_given_back_mid_call_waits_for_that_call_so_the_next_attempt_pays_nothing(
    rt: Runtime, tenant: str
) -> None:
    # Given an attempt whose function is inside a paid call (the provider holds its answer), as when
    # a queue cancels an activity whose sync function cannot be stopped
    provider = HeldProvider()
    sent, answer, billed = provider.sent, provider.answer, provider.billed

    @agent(name=f"given-back-{tenant}")
    def ask(item: papayya.Item) -> str:
        reply = run.llm("ask", provider="openai", model="gpt-4o-mini", max_tokens=5)(provider, prompt=item.id)
        return str(reply["choices"][0]["message"]["content"])

    papayya.tenants.add(tenant)
    run_id, item_id = one_item_run(rt, tenant, ask.name, "celery", "q", input='{"id": "q"}')
    ref = ItemRef(item_id, "q", run_id, tenant)
    first = execute.begin(rt, ask, ref, backend="celery", price_overrides={})
    assert first is not None
    body = threading.Thread(target=execute.invoke, args=(first,), daemon=True)
    body.start()
    assert sent.wait(30)

    # When the attempt is given back while that call is on the wire, and the call then completes
    released: list[execute.Concluded] = []
    giver = threading.Thread(target=lambda: released.append(execute.release(first)), daemon=True)
    giver.start()
    giver.join(0.5)
    assert not released  # the release waits for the call on the wire
    answer.set()
    giver.join(30)
    body.join(30)

    # Then the call was recorded before the item went back, and the next attempt answers it from the
    # journal instead of paying for it again
    assert released
    assert not released[0].terminal
    second = execute.begin(rt, ask, ref, backend="celery", price_overrides={})
    assert second is not None
    output, error = execute.invoke(second)
    assert (output, error) == ("Q", None)
    assert billed == ["q"]
    assert execute.conclude(second, output=output).status == "succeeded"  # nothing left for a reaper


def test_an_item_left_paused_in_a_running_run_is_claimed_by_a_queue_backend(rt: Runtime, tenant: str) -> None:
    # Given an item that stopped as paused at a pause a resume lifted while it ran (its run is running)
    papayya.tenants.add(tenant)
    run_id, item_id = one_item_run(rt, tenant, "echo", "temporal", "k")
    with psycopg.connect(rt.store.url, autocommit=True) as conn:
        conn.execute("UPDATE papayya.items SET status = 'paused' WHERE item_id = %s", (item_id,))
    ref = ItemRef(item_id, "k", run_id, tenant)
    # Then a queue backend's delivery of it runs it (the run's status is the truth, not the item's),
    ctx = execute.begin(rt, echo, ref, backend="temporal", price_overrides={})
    assert ctx is not None
    assert execute.conclude(ctx, output={"id": "k"}).status == "succeeded"
    # while an item of a paused run is refused as paused
    other_run, other_item = one_item_run(rt, tenant, "echo", "temporal", "k2")
    papayya.pause(other_run)
    other = ItemRef(other_item, "k2", other_run, tenant)
    assert execute.begin(rt, echo, other, backend="temporal", price_overrides={}) is None
    assert execute.refusal(rt, other) == "paused"


def test_a_worker_stopped_mid_call_gives_the_item_back_after_recording_that_call(
    rt: Runtime, tenant: str
) -> None:
    from papayya import engine

    provider = HeldProvider()
    sent, answer, billed = provider.sent, provider.answer, provider.billed

    @agent(name=f"stopped-mid-call-{tenant}")
    def ask(item: papayya.Item) -> str:
        reply = run.llm("ask", provider="openai", model="gpt-4o-mini", max_tokens=5)(provider, prompt=item.id)
        return str(reply["choices"][0]["message"]["content"])

    # Given a native worker (SIGTERM, a deploy) stopped with no grace while its item is inside a paid call
    handle = ask.submit([{"id": "deploy"}], tenant=tenant)
    worker = engine.Worker(rt, [ask], concurrency=1, run_ids=[handle.run_id], poll=0.1)
    runner = threading.Thread(target=worker.run, kwargs={"grace": 0.0}, daemon=True)
    runner.start()
    try:
        assert sent.wait(30)
        worker.stop()
        runner.join(0.5)
        assert runner.is_alive()  # it waits for the call on the wire
        answer.set()
        runner.join(30)
        assert not runner.is_alive()
    finally:
        answer.set()
        worker.stop()
        runner.join(5)

    # Then the call was recorded before the item went back to the queue, and the next run of the
    # item answers it from the journal: the provider was paid once
    detail = rt.store.item_detail(papayya.RunResult.load(handle.run_id, tenant).items()[0].item_id)
    assert detail["status"] == "queued"
    assert [c["step_key"] for c in detail["llm_calls"]] == ["llm:ask#1"]
    again = engine.Worker(rt, [ask], concurrency=1, run_ids=[handle.run_id], poll=0.1, until_done=True)
    again.run()
    assert papayya.RunResult.load(handle.run_id, tenant).counts["succeeded"] == 1
    assert billed == ["deploy"]
