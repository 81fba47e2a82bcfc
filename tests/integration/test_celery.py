"""Celery with papayya installed: a real worker (``start_worker``) on the in-memory transport, and on
Redis and RabbitMQ when they answer (CI fails without them). LLM calls go to the FakeProvider through
the real openai client, so its request count proves what was paid for.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import openai
import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker

import papayya
import papayya_celery
import papayya_openai
from papayya import Retryable, agent, execute, reaper
from papayya.runtime import Runtime
from papayya.testing import FakeProvider, Reply
from papayya_celery.backend import CeleryBackend
from tests.conftest import need_service

MODEL = "gpt-4o-mini"

BROKERS = {
    "memory": "memory://",
    "redis": "redis://127.0.0.1:6379/15",
    "rabbitmq": "amqp://guest:guest@127.0.0.1:5672//",
}
PORTS = {"redis": 6379, "rabbitmq": 5672}


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def client(fake: FakeProvider) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fake.openai_url, api_key="test", max_retries=0) as c:
        yield papayya_openai.instrument(c)


@pytest.fixture
def make_app(rt: Runtime) -> Iterator[Callable[..., Celery]]:
    """Celery apps with papayya installed, each on its own queue; uninstalled afterwards."""
    apps: list[Celery] = []

    def make(broker: str = "memory") -> Celery:
        if broker in PORTS and not _answers(PORTS[broker]):
            need_service(f"{broker} does not answer on 127.0.0.1:{PORTS[broker]}")
        app = Celery(
            f"papayya-test-{uuid.uuid4().hex[:8]}", broker=BROKERS[broker], backend="cache+memory://"
        )
        app.conf.update(
            task_default_queue=f"papayya-test-{uuid.uuid4().hex[:8]}",
            task_acks_late=True,
            broker_connection_retry_on_startup=False,
        )
        if broker == "memory":
            # The in-memory transport polls its queues once a second by default: a message waits up to
            # that long before the worker sees it.
            app.conf.broker_transport_options = {"polling_interval": 0.05}
        papayya_celery.install(app)
        apps.append(app)
        return app

    yield make
    for app in apps:
        papayya_celery.uninstall(app)


@contextmanager
def worker(app: Celery, **options: Any) -> Iterator[None]:
    """A real Celery worker in a thread (``start_worker``) for the ``with`` block.

    Stopping it is a warm shutdown (``should_terminate``), as ``start_worker`` does; on its own that
    takes about 4 s, since the worker's loop notices only between two 2-second waits for messages (one
    more runs as it leaves). A remote-control ping every 50 ms ends each wait at once, so it stops in
    a fraction of a second, having finished what it was running."""
    from celery.worker import state

    stopped = threading.Event()

    def wake() -> None:
        while not stopped.is_set():
            app.control.ping(timeout=0.05)

    waker = threading.Thread(target=wake, name="celery-test-waker", daemon=True)
    try:
        with start_worker(app, perform_ping_check=False, shutdown_timeout=20, **options):
            try:
                yield
            finally:
                state.should_terminate = 0  # what start_worker sets next, before joining the worker
                waker.start()
    finally:
        stopped.set()
        if waker.is_alive():
            waker.join(timeout=5)


def celery_backend(**settings: Any) -> Runtime:
    """PAPAYYA_BACKEND=celery for this test (the runtime resolves the installed app); the new runtime."""
    papayya.configure(backend="celery", **settings)
    return papayya.runtime.get_runtime()


def ask(client: openai.OpenAI, text: str) -> str:
    reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text}])
    return str(reply.choices[0].message.content)


def items_of(rt: Runtime, tenant: str) -> list[dict[str, Any]]:
    with rt.store._pool.connection() as conn:
        return conn.execute(
            # the input as papayya reads it (kept apart since schema 13); named last, so it wins
            "SELECT i.*, r.options AS run_options, r.backend AS run_backend, r.status AS run_status, "
            "coalesce(i.input, (SELECT n.input FROM papayya.item_inputs n "
            "WHERE n.item_id = i.item_id AND n.tenant_id = i.tenant_id)) AS input "
            "FROM papayya.items i JOIN papayya.runs r USING (run_id) WHERE i.tenant_id = %s ORDER BY i.key",
            (tenant,),
        ).fetchall()


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.parametrize("broker", ["memory", "redis", "rabbitmq"])
def test_map_publishes_one_task_per_item_and_accounts_each_like_the_native_engine(
    rt: Runtime, tenant: str, fake: FakeProvider, client: openai.OpenAI, make_app: Any, broker: str
) -> None:
    app = make_app(broker)
    fake.reply = lambda r: Reply(f"summary of {r.last_user_message}", input_tokens=900)

    @app.task(shared=False, acks_late=True)
    @agent
    def summarize(item: papayya.Item) -> dict[str, str]:
        return {"summary": ask(client, item["text"])}

    rt = celery_backend()
    with worker(app):
        result = summarize.map([{"id": f"d{i}", "text": f"doc {i}"} for i in range(4)], tenant=tenant)

    assert result.status == "completed"
    assert result.counts == {"succeeded": 4, "degraded": 0, "failed": 0}
    assert result.llm_calls == 4
    assert fake.count == 4
    assert result.cost_usd > 0
    for item in result.items():
        detail = rt.store.item_detail(item.item_id, tenant)
        (attempt,) = detail["attempts_detail"]
        assert attempt["backend"] == "celery"
        assert detail["output"] == {"summary": f"summary of doc {item.key[1:]}"}
        assert detail["llm_calls"][0]["cost_usd"] == item.cost_usd


def test_a_message_from_the_teams_own_code_with_only_a_tenant_becomes_an_item(
    rt: Runtime, tenant: str, make_app: Any
) -> None:
    app = make_app()

    @app.task(shared=False, acks_late=True)
    @agent
    def enrich(item: papayya.Item) -> dict[str, Any]:
        return {"key": item.id, "upper": item["text"].upper()}

    with worker(app):
        # Given the team's own publishes: one with a key header, one in a tenant block (task id as key)
        first = enrich.apply_async(({"text": "a"},), headers=papayya_celery.headers(tenant, key="doc-1"))
        with papayya_celery.tenant(tenant):
            second = enrich.delay({"text": "b"})
        assert first.get(timeout=20) == {"key": "doc-1", "upper": "A"}
        assert second.get(timeout=20) == {"key": second.id, "upper": "B"}
        # When a message with the same key is delivered again
        again = enrich.apply_async(({"text": "a"},), headers=papayya_celery.headers(tenant, key="doc-1"))
        assert again.get(timeout=20) is None  # a duplicate of a done item: acked, not run

    rows = items_of(rt, tenant)
    # Then both are items of one intake run of the tenant, with the message's argument as input
    assert [r["key"] for r in rows] == sorted(["doc-1", second.id])
    assert {r["status"] for r in rows} == {"succeeded"}
    assert len({r["run_id"] for r in rows}) == 1
    assert rows[0]["run_options"]["intake"] is True
    assert rows[0]["run_backend"] == "celery"
    assert {r["key"]: r["input"] for r in rows} == {"doc-1": {"text": "a"}, second.id: {"text": "b"}}
    assert all(r["attempts"] == 1 for r in rows)


def test_a_message_without_a_tenant_fails_with_one_sentence_and_records_nothing(
    rt: Runtime, make_app: Any
) -> None:
    app = make_app()
    calls: list[str] = []

    @app.task(shared=False)
    @agent
    def enrich(item: papayya.Item) -> None:
        calls.append(item.id)

    with worker(app):
        result = enrich.delay({"text": "orphan"})
        with pytest.raises(papayya.TenantError, match="without a papayya tenant"):
            result.get(timeout=20)
    assert calls == []


def test_a_producer_not_yet_passing_tenants_is_adopted_under_the_default_tenant(
    rt: Runtime, tenant: str, make_app: Any
) -> None:
    app = make_app()

    @app.task(shared=False, acks_late=True)
    @agent
    def enrich(item: papayya.Item) -> dict[str, Any]:
        return {"upper": item["text"].upper()}

    # Given PAPAYYA_DEFAULT_TENANT, a team installs papayya before touching its producers
    papayya.configure(default_tenant=tenant)
    rt = papayya.runtime.get_runtime()
    with worker(app):
        result = enrich.delay({"text": "orphan"})  # the producer as it always was: no tenant
        assert result.get(timeout=20) == {"upper": "ORPHAN"}
    # Then the task is an accountable item of the default tenant's intake run, not an error
    (row,) = items_of(rt, tenant)
    assert (row["status"], row["input"]) == ("succeeded", {"text": "orphan"})
    assert row["run_options"]["intake"] is True


def _record_run(
    rt: Runtime, tenant: str, agent_name: str, keys: list[str]
) -> tuple[uuid.UUID, list[uuid.UUID]]:
    papayya.tenants.add(tenant, exist_ok=True)
    run_id = uuid.uuid4()
    ids = [uuid.uuid4() for _ in keys]
    rt.store.run_create(
        run_id=run_id,
        tenant_id=tenant,
        agent_name=agent_name,
        name=None,
        backend="celery",
        items=[(i, k, '{"text": "x"}') for i, k in zip(ids, keys, strict=True)],
        max_attempts=1,
        options={},
    )
    return run_id, ids


class Recorded(logging.Handler):
    """Log records of one logger (Celery's worker reconfigures logging, so caplog sees nothing)."""

    def __init__(self, name: str) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self.logger = logging.getLogger(name)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def __enter__(self) -> Recorded:
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self)


def test_a_forged_tenant_header_for_another_tenants_item_is_refused(
    rt: Runtime, tenant: str, make_app: Any
) -> None:
    app = make_app()
    calls: list[str] = []

    @app.task(shared=False)
    @agent
    def enrich(item: papayya.Item) -> None:
        calls.append(item.id)

    victim = f"{tenant}-victim"
    _, (item_id,) = _record_run(rt, victim, enrich.run.name, ["secret"])
    with Recorded("papayya.celery") as logged, worker(app):
        forged = enrich.apply_async(
            ({"id": "secret"},), headers={papayya_celery.TENANT: tenant, papayya_celery.ITEM: str(item_id)}
        )
        assert forged.get(timeout=20) is None

    assert calls == []
    (row,) = items_of(rt, victim)
    assert (row["status"], row["attempts"]) == ("queued", 0)
    assert any(f"tenant {tenant!r} has no item {item_id}" in line for line in logged.lines)


def test_celery_autoretry_attempts_are_attempts_of_the_same_item_and_headers_survive(
    rt: Runtime, tenant: str, make_app: Any
) -> None:
    app = make_app()
    seen: list[tuple[int, str | None, str | None]] = []

    @app.task(
        shared=False,
        acks_late=True,
        autoretry_for=(ConnectionError,),
        retry_kwargs={"countdown": 0},
        max_retries=3,
    )
    @agent
    def flaky(item: papayya.Item) -> str:
        req = flaky.request
        seen.append((req.retries, req.get(papayya_celery.TENANT), req.get(papayya_celery.ITEM)))
        if len(seen) < 3:
            raise ConnectionError("socket closed")
        return "ok"

    rt = celery_backend()
    with worker(app):
        result = flaky.map([{"id": "only"}], tenant=tenant)

    assert result.counts["succeeded"] == 1
    (item,) = result.items()
    assert [s[0] for s in seen] == [0, 1, 2]
    assert {(s[1], s[2]) for s in seen} == {(tenant, str(item.item_id))}
    attempts = rt.store.item_detail(item.item_id, tenant)["attempts_detail"]
    assert [a["status"] for a in attempts] == ["failed", "failed", "succeeded"]
    assert {a["backend"] for a in attempts} == {"celery"}


def test_task_retry_called_in_the_agent_and_papayya_retries_are_new_attempts(
    rt: Runtime, tenant: str, make_app: Any
) -> None:
    app = make_app()
    runs: Counter[str] = Counter()

    @app.task(shared=False, acks_late=True)
    @agent(retries=2, backoff=0)
    def work(item: papayya.Item) -> str:
        runs[item.id] += 1
        if item.id == "celery-retry" and runs[item.id] == 1:
            raise work.retry(countdown=0)  # the team's own Celery retry, inside the agent
        if item.id == "papayya-retry" and runs[item.id] == 1:
            raise Retryable("try again")  # the agent's own retry policy
        return "ok"

    rt = celery_backend()
    with worker(app):
        result = work.map([{"id": "celery-retry"}, {"id": "papayya-retry"}], tenant=tenant)

    assert result.counts["succeeded"] == 2
    assert runs == {"celery-retry": 2, "papayya-retry": 2}
    for item in result.items():
        attempts = rt.store.item_detail(item.item_id, tenant)["attempts_detail"]
        assert [a["status"] for a in attempts] == ["failed", "succeeded"]


def test_failures_cluster_and_celery_shows_them_too(rt: Runtime, tenant: str, make_app: Any) -> None:
    app = make_app()

    @app.task(shared=False, acks_late=True)
    @agent
    def parse(item: papayya.Item) -> int:
        return int(item["value"])

    with worker(app), papayya_celery.tenant(tenant):
        results = [parse.delay({"value": v}) for v in ["1", "x", "y", "2"]]
        states = []
        for r in results:
            try:
                r.get(timeout=20)
            except ValueError:
                pass
            states.append(r.state)

    assert states == ["SUCCESS", "FAILURE", "FAILURE", "SUCCESS"]
    rows = items_of(rt, tenant)
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 2
    assert len({r["fingerprint"] for r in failed}) == 1
    (cluster,) = papayya.clusters(run_id=failed[0]["run_id"])
    assert (cluster.items, cluster.outcome) == (2, "failed")


def test_a_paused_tenant_parks_its_messages_and_resume_republishes_exactly_those(
    rt: Runtime, tenant: str, fake: FakeProvider, client: openai.OpenAI, make_app: Any
) -> None:
    app = make_app()
    ran: Counter[str] = Counter()
    papayya.tenants.add(tenant)
    papayya.tenants.set_price(tenant, "openai", MODEL, input_mtok="1000", output_mtok="1000")
    papayya.tenants.set_budget(tenant, "0.1")
    fake.reply = lambda r: Reply("ok", input_tokens=20, output_tokens=5)

    @app.task(shared=False, acks_late=True)
    @agent
    def enrich(item: papayya.Item) -> str:
        ran[item.id] += 1
        reply = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": item.id}], max_tokens=5
        )
        return str(reply.choices[0].message.content)

    rt = celery_backend()
    keys = [f"k{i:02d}" for i in range(12)]
    with worker(app):
        # Given a budget with room for a few calls
        first = enrich.map([{"id": k} for k in keys], tenant=tenant)
        assert first.status == "paused"
        done = {i.key for i in first.items(outcome="succeeded")}
        parked = {r["key"] for r in items_of(rt, tenant) if r["status"] == "paused"}
        assert done
        assert parked
        assert done | parked == set(keys)
        paid = fake.count
        assert paid == len(done)
        # Then parked messages did not run the agent; the one stopped at its call ran once
        assert sum(ran.values()) <= len(done) + 1
        # When the budget is raised and the run resumed
        papayya.tenants.set_budget(tenant, "100")
        before = dict(ran)
        resumed = enrich.resume(first.run_id)

    assert resumed.status == "completed"
    assert resumed.counts["succeeded"] == len(keys)
    # Then exactly the paused items ran again, and no recorded call was paid twice
    assert {k for k in keys if ran[k] > before.get(k, 0)} == parked
    assert fake.count == len(keys)


def test_replay_of_items_that_ran_on_celery_runs_them_on_celery(
    rt: Runtime, tenant: str, make_app: Any
) -> None:
    app = make_app()
    broken = {"b1", "b2"}

    @app.task(shared=False, acks_late=True)
    @agent
    def check(item: papayya.Item) -> str:
        if item.id in broken:
            raise ValueError(f"bad item {item.id}")
        return "ok"

    rt = celery_backend()
    with worker(app):
        first = check.map([{"id": k} for k in ["a1", "b1", "b2", "a2"]], tenant=tenant)
        assert first.counts["failed"] == 2
        broken.clear()
        replayed = check.replay(run=first.run_id, outcome="failed")

    assert replayed.counts == {"succeeded": 2, "degraded": 0, "failed": 0}
    run = rt.store.run_get(replayed.run_id, tenant)
    assert (run["backend"], run["replayed_from"]) == ("celery", first.run_id)
    for item in replayed.items():
        (attempt,) = rt.store.item_detail(item.item_id, tenant)["attempts_detail"]
        assert attempt["backend"] == "celery"


def test_the_reaper_marks_a_lost_attempt_stalled_and_redrive_publishes_it_again(
    rt: Runtime, tenant: str, make_app: Any
) -> None:
    app = make_app()

    @app.task(shared=False, acks_late=True)
    @agent
    def enrich(item: papayya.Item) -> str:
        return f"done {item.id}"

    runtime = celery_backend(lease_seconds=0.5)
    assert isinstance(runtime.backend, CeleryBackend)
    run_id, (item_id,) = _record_run(runtime, tenant, enrich.run.name, ["lost"])
    ref = execute.ItemRef(item_id, "lost", run_id, tenant)
    # Given an attempt whose worker died (begun, never concluded, no heartbeat)
    ctx = execute.begin(runtime, enrich.run, ref, backend="celery", price_overrides={})
    assert ctx is not None
    wait_until(lambda: runtime.store.run_progress(run_id, tenant)["expired"] == 1, "the lease to expire")
    with worker(app):
        # When the reaper sweeps
        swept = reaper.sweep(runtime)
        assert [r.item_id for r in swept.stalled] == [item_id]
        # Then the item is published again and ends terminal
        wait_until(lambda: items_of(runtime, tenant)[0]["status"] == "succeeded", "the re-driven item")
    attempts = runtime.store.item_detail(item_id, tenant)["attempts_detail"]
    assert [a["status"] for a in attempts] == ["stalled", "succeeded"]
    assert items_of(runtime, tenant)[0]["stalls"] == 1


def test_uninstall_gives_back_the_plain_celery_task(rt: Runtime, tenant: str, make_app: Any) -> None:
    app = make_app()

    @app.task(shared=False)
    @agent
    def echo(item: Any) -> Any:
        return item

    assert echo({"x": 1}) == {"x": 1}  # a direct call is the function
    papayya_celery.uninstall(app)
    with worker(app):
        assert echo.delay({"x": 2}).get(timeout=20) == {"x": 2}
    papayya_celery.install(app)
    with worker(app), papayya_celery.tenant(tenant):
        assert echo.delay({"x": 3}).get(timeout=20) is None  # an Item is not JSON: recorded, not returned
    (row,) = items_of(rt, tenant)
    assert row["status"] == "succeeded"


def test_many_messages_on_a_thread_pool_each_get_exactly_one_outcome(
    rt: Runtime, tenant: str, make_app: Any
) -> None:
    app = make_app()
    lock = threading.Lock()
    seen: Counter[str] = Counter()

    @app.task(shared=False, acks_late=True)
    @agent
    def count(item: papayya.Item) -> str:
        with lock:
            seen[item.id] += 1
        return item.id

    celery_backend()
    with worker(app, pool="threads", concurrency=4):
        result = count.map([{"id": f"i{n:03d}"} for n in range(60)], tenant=tenant)
    assert result.counts["succeeded"] == 60
    assert set(seen.values()) == {1}
    assert result.cost_usd == Decimal(0)


def test_a_submitted_run_completes_when_its_last_item_concludes_with_nobody_waiting(
    rt: Runtime, tenant: str, make_app: Any
) -> None:
    app = make_app()

    @app.task(shared=False, acks_late=True)
    @agent
    def echo(item: papayya.Item) -> dict[str, str]:
        return {"id": item.id}

    rt = celery_backend()
    with worker(app):
        # Given a run submitted and left alone: no wait(), no `runs show --watch`, no dashboard
        handle = echo.submit([{"id": f"k{i}"} for i in range(10)], tenant=tenant)
        # Then it becomes completed when its last item concludes, in the worker that concluded it
        wait_until(
            lambda: rt.store.run_get(handle.run_id, tenant)["status"] == "completed", "the run completed"
        )
    assert {r["status"] for r in items_of(rt, tenant)} == {"succeeded"}


def test_a_wait_with_no_worker_says_so(
    rt: Runtime, tenant: str, make_app: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from papayya import engine

    app = make_app()

    @app.task(shared=False)
    @agent
    def lonely(item: papayya.Item) -> None:
        """Never runs: no worker consumes this app's queue."""

    rt = celery_backend()
    monkeypatch.setattr(engine.waiting, "QUIET_WARNING", 0.5)
    handle = lonely.submit([{"id": "a"}], tenant=tenant)
    with caplog.at_level("WARNING", logger="papayya.engine"):
        status = engine.wait_for_run(rt, handle.run_id, tenant, poll=0.1, timeout=3)
    assert status == "running"
    assert [r.getMessage() for r in caplog.records if "no item has started" in r.getMessage()]
