"""SQS with papayya: a moto server (started once per session) and the real boto3 client; consumers run
in a thread of the test process here (tests/reliability/test_sqs_kill.py runs them as processes). LLM
calls go to the FakeProvider through the real openai client, so its request count proves what was
paid for.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import openai
import pytest

import papayya
import papayya_openai
import papayya_sqs
from papayya import Retryable, agent, execute, reaper
from papayya.runtime import Runtime
from papayya.testing import FakeProvider, Reply
from papayya_sqs.backend import SqsBackend
from papayya_sqs.message import entries
from tests.conftest import need_service

MODEL = "gpt-4o-mini"


# -- fixtures and helpers (tests/reliability/test_sqs_kill.py imports these) --------------------------


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto SQS server on a free port for the whole session."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        need_service("moto[server] is not installed (pip install 'papayya[dev]')")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture
def sqs(rt: Runtime, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A boto3 SQS client on the moto server (dummy credentials); PAPAYYA_SQS_ENDPOINT_URL points there."""
    import boto3

    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PAPAYYA_SQS_ENDPOINT_URL", moto_endpoint)
    return boto3.client("sqs", endpoint_url=moto_endpoint, region_name="us-east-1")


class Queues:
    """Queues made for one test: each with a dead-letter queue of its own."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def make(
        self, *, max_receive: int | None = 3, visibility: int = 30, fifo: bool = False
    ) -> tuple[str, str | None]:
        name = f"papayya-{uuid.uuid4().hex[:10]}"
        suffix = ".fifo" if fifo else ""
        fifo_attrs = {"FifoQueue": "true"} if fifo else {}
        dlq = None
        attrs: dict[str, str] = {"VisibilityTimeout": str(visibility), **fifo_attrs}
        if max_receive is not None:
            dlq = self.client.create_queue(QueueName=f"{name}-dlq{suffix}", Attributes=fifo_attrs)["QueueUrl"]
            arn = self.client.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
                "QueueArn"
            ]
            attrs["RedrivePolicy"] = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": max_receive})
        url = self.client.create_queue(QueueName=f"{name}{suffix}", Attributes=attrs)["QueueUrl"]
        return url, dlq

    def count(self, url: str) -> int:
        """Messages on ``url``, visible or in flight (approximate, exact on moto)."""
        got = self.client.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(got["ApproximateNumberOfMessages"]) + int(got["ApproximateNumberOfMessagesNotVisible"])

    def drain(self, url: str) -> list[dict[str, Any]]:
        """Every message visible on ``url`` now (received, not deleted)."""
        found: list[dict[str, Any]] = []
        while True:
            got = self.client.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=0,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["All"],
            ).get("Messages", [])
            if not got:
                return found
            found.extend(got)


@pytest.fixture
def queues(sqs: Any) -> Queues:
    return Queues(sqs)


@contextmanager
def consuming(consumer: papayya_sqs.Consumer, *, grace: float = 10.0) -> Iterator[papayya_sqs.Consumer]:
    """Run ``consumer`` on a thread for the block; stop and drain it afterwards."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            consumer.run(grace=grace)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name="test-consumer", daemon=True)
    thread.start()
    try:
        yield consumer
    finally:
        consumer.stop()
        thread.join(timeout=60)
        assert not thread.is_alive(), "the consumer did not stop"
    if errors:
        raise errors[0]


@pytest.fixture
def sqs_backend(sqs: Any, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Runtime]:
    """``sqs_backend(url, **settings)``: PAPAYYA_BACKEND=sqs on queue ``url`` for this test; the new
    runtime."""

    def use(queue_url: str, **settings: Any) -> Runtime:
        monkeypatch.setenv("PAPAYYA_SQS_QUEUE_URL", queue_url)
        papayya.configure(backend="sqs", **settings)
        return papayya.runtime.get_runtime()

    return use


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


class Recorded(logging.Handler):
    """Log lines of one logger."""

    def __init__(self, name: str) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self.logger = logging.getLogger(name)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def __enter__(self) -> Recorded:
        self.previous = self.logger.level
        self.logger.setLevel(logging.INFO)
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self)
        self.logger.setLevel(self.previous)


def send_own(sqs: Any, url: str, body: str, tenant: str | None, key: str | None = None) -> str:
    """A message the team's own code sends (a JSON body, a tenant attribute); its id."""
    kwargs: dict[str, Any] = {"QueueUrl": url, "MessageBody": body}
    if tenant is not None:
        kwargs["MessageAttributes"] = papayya_sqs.attributes(tenant, key=key)
    return str(sqs.send_message(**kwargs)["MessageId"])


def record_run(
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
        backend="sqs",
        items=[(i, k, json.dumps({"text": k})) for i, k in zip(ids, keys, strict=True)],
        max_attempts=1,
        options={},
    )
    return run_id, ids


@pytest.fixture
def client(fake: FakeProvider) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fake.openai_url, api_key="test", max_retries=0) as c:
        yield papayya_openai.instrument(c)


# -- tests ------------------------------------------------------------------------------------------


def test_map_sends_one_message_per_item_and_accounts_each_like_the_native_engine(
    rt: Runtime,
    tenant: str,
    sqs: Any,
    queues: Queues,
    sqs_backend: Any,
    fake: FakeProvider,
    client: openai.OpenAI,
) -> None:
    url, dlq = queues.make()
    fake.reply = lambda r: Reply(f"summary of {r.last_user_message}", input_tokens=900)

    @agent
    def summarize(item: papayya.Item) -> dict[str, str]:
        reply = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": item["text"]}]
        )
        return {"summary": str(reply.choices[0].message.content)}

    rt = sqs_backend(url)
    with consuming(papayya_sqs.Consumer(url, agent=summarize, sqs=sqs, wait_seconds=1)) as consumer:
        result = summarize.map([{"id": f"d{i}", "text": f"doc {i}"} for i in range(25)], tenant=tenant)

    assert result.status == "completed"
    assert result.counts == {"succeeded": 25, "degraded": 0, "failed": 0}
    assert fake.count == 25
    assert result.cost_usd > 0
    for item in result.items():
        detail = rt.store.item_detail(item.item_id, tenant)
        (attempt,) = detail["attempts_detail"]
        assert attempt["backend"] == "sqs"
        assert detail["output"] == {"summary": f"summary of doc {item.key[1:]}"}
    assert consumer.stats.received == 25
    assert consumer.stats.succeeded == 25
    assert queues.drain(url) == []  # every message deleted
    assert dlq is not None
    assert queues.drain(dlq) == []


def test_messages_carry_ids_not_payloads_and_the_tenant_as_message_group(
    rt: Runtime, tenant: str, sqs: Any, queues: Queues, sqs_backend: Any
) -> None:
    url, _ = queues.make()

    @agent
    def enrich(item: papayya.Item) -> None:
        pass

    rt = sqs_backend(url)
    handle = enrich.submit([{"id": "a", "secret": "s3cr3t"}, {"id": "b", "secret": "s3cr3t"}], tenant=tenant)
    msgs = queues.drain(url)
    assert len(msgs) == 2
    ids = {r["item_id"]: r["key"] for r in items_of(rt, tenant)}
    for m in msgs:
        assert "s3cr3t" not in m["Body"]
        attrs = {k: v["StringValue"] for k, v in m["MessageAttributes"].items()}
        assert attrs[papayya_sqs.TENANT] == tenant
        assert attrs[papayya_sqs.RUN] == str(handle.run_id)
        assert ids[uuid.UUID(attrs[papayya_sqs.ITEM])] == json.loads(m["Body"])["id"]
        assert m["Attributes"]["MessageGroupId"] == tenant  # fair queues: one group per tenant


def test_a_message_from_the_teams_own_code_with_a_tenant_becomes_an_item(
    rt: Runtime, tenant: str, sqs: Any, queues: Queues
) -> None:
    url, _ = queues.make()

    @agent
    def enrich(item: papayya.Item) -> dict[str, Any]:
        return {"key": item.id, "upper": item["text"].upper()}

    first = send_own(sqs, url, json.dumps({"text": "a"}), tenant, key="doc-1")
    second = send_own(sqs, url, json.dumps({"text": "b"}), tenant)  # no key: the message id is the key
    with consuming(papayya_sqs.Consumer(url, agent=enrich, sqs=sqs, wait_seconds=1)) as consumer:
        wait_until(lambda: consumer.stats.succeeded == 2, "both messages")
        # When a message with the same key arrives again
        send_own(sqs, url, json.dumps({"text": "a"}), tenant, key="doc-1")
        wait_until(lambda: consumer.stats.duplicates == 1, "the duplicate to be dropped")

    rows = items_of(rt, tenant)
    assert [r["key"] for r in rows] == sorted(["doc-1", second])
    assert {r["status"] for r in rows} == {"succeeded"}
    assert len({r["run_id"] for r in rows}) == 1
    assert rows[0]["run_options"]["intake"] is True
    assert rows[0]["run_backend"] == "sqs"
    assert {r["key"]: r["output"] for r in rows} == {
        "doc-1": {"key": "doc-1", "upper": "A"},
        second: {"key": second, "upper": "B"},
    }
    assert all(r["attempts"] == 1 for r in rows)
    assert first != second
    assert queues.drain(url) == []


def test_a_producer_not_yet_sending_tenants_is_adopted_under_the_default_tenant(
    rt: Runtime, tenant: str, sqs: Any, queues: Queues
) -> None:
    url, _ = queues.make()

    @agent
    def enrich(item: papayya.Item) -> dict[str, Any]:
        return {"upper": item["text"].upper()}

    # Given PAPAYYA_DEFAULT_TENANT, and the team's producer unchanged (no tenant attribute)
    papayya.configure(default_tenant=tenant)
    rt = papayya.runtime.get_runtime()
    send_own(sqs, url, json.dumps({"text": "orphan"}), None)
    with consuming(papayya_sqs.Consumer(url, agent=enrich, sqs=sqs, wait_seconds=1)) as consumer:
        wait_until(lambda: consumer.stats.succeeded == 1, "the message")
    # Then it is an item of the default tenant's intake run, not a dead letter
    (row,) = items_of(rt, tenant)
    assert (row["status"], row["output"]) == ("succeeded", {"upper": "ORPHAN"})
    assert queues.drain(url) == []


def test_a_message_whose_consumer_vanished_is_redelivered_after_its_visibility_timeout(
    rt: Runtime, tenant: str, sqs: Any, queues: Queues, sqs_backend: Any
) -> None:
    url, _ = queues.make(max_receive=5)

    @agent
    def enrich(item: papayya.Item) -> str:
        return f"done {item.id}"

    rt = sqs_backend(url)
    handle = enrich.submit([{"id": "only"}], tenant=tenant)
    # Given a consumer that received the message and vanished before running it
    got = sqs.receive_message(QueueUrl=url, VisibilityTimeout=1, MessageAttributeNames=["All"])["Messages"]
    assert len(got) == 1
    # When its visibility timeout runs out, a papayya consumer gets the second delivery
    with consuming(papayya_sqs.Consumer(url, agent=enrich, sqs=sqs, wait_seconds=1)) as consumer:
        wait_until(lambda: consumer.stats.succeeded == 1, "the redelivered message")
    (row,) = items_of(rt, tenant)
    assert (row["status"], row["attempts"], row["run_id"]) == ("succeeded", 1, handle.run_id)
    assert queues.drain(url) == []


def test_a_long_item_keeps_its_message_hidden_and_runs_once(
    rt: Runtime, tenant: str, sqs: Any, queues: Queues, sqs_backend: Any
) -> None:
    url, _ = queues.make(visibility=2, max_receive=2)
    runs: Counter[str] = Counter()

    @agent
    def slow(item: papayya.Item) -> str:
        runs[item.id] += 1
        time.sleep(5)  # two and a half visibility timeouts
        return "ok"

    rt = sqs_backend(url, lease_seconds=1.5)
    with consuming(papayya_sqs.Consumer(url, agent=slow, sqs=sqs, wait_seconds=1)) as consumer:
        result = slow.map([{"id": "long"}], tenant=tenant)
    assert result.counts["succeeded"] == 1
    assert runs == {"long": 1}
    assert consumer.stats.received == 1  # never redelivered while it ran
    (row,) = items_of(rt, tenant)
    assert (row["attempts"], row["stalls"]) == (1, 0)


def test_a_retry_hides_the_message_for_the_backoff_and_is_an_attempt_of_the_same_item(
    rt: Runtime, tenant: str, sqs: Any, queues: Queues, sqs_backend: Any
) -> None:
    url, _ = queues.make(max_receive=5)
    seen: Counter[str] = Counter()

    @agent(retries=3, backoff=0.5, backoff_max=1)
    def flaky(item: papayya.Item) -> str:
        seen[item.id] += 1
        if seen[item.id] < 3:
            raise ConnectionError("socket closed")
        return "ok"

    rt = sqs_backend(url)
    with consuming(papayya_sqs.Consumer(url, agent=flaky, sqs=sqs, wait_seconds=1)) as consumer:
        result = flaky.map([{"id": "only"}], tenant=tenant)
    assert result.counts["succeeded"] == 1
    (item,) = result.items()
    attempts = rt.store.item_detail(item.item_id, tenant)["attempts_detail"]
    assert [a["status"] for a in attempts] == ["failed", "failed", "succeeded"]
    assert consumer.stats.received == 3  # one message, delivered three times
    assert consumer.stats.retried == 2


def test_past_max_receive_count_the_message_is_dead_lettered_and_the_item_failed(
    rt: Runtime, tenant: str, sqs: Any, queues: Queues, sqs_backend: Any
) -> None:
    url, dlq = queues.make(max_receive=2)
    assert dlq is not None

    @agent(retries=10, backoff=0)
    def never(item: papayya.Item) -> str:
        raise Retryable("the model is overloaded")

    rt = sqs_backend(url)
    with consuming(papayya_sqs.Consumer(url, agent=never, sqs=sqs, wait_seconds=1)) as consumer:
        result = never.map([{"id": "poison"}, {"id": "poison-2"}], tenant=tenant)
        wait_until(lambda: consumer.stats.dead_lettered == 2, "both items to be dead-lettered")

    # Then each item is failed, visibly dead-lettered, after as many attempts as deliveries
    assert result.counts == {"succeeded": 0, "degraded": 0, "failed": 2}
    for item in result.items():
        detail = rt.store.item_detail(item.item_id, tenant)
        assert [a["status"] for a in detail["attempts_detail"]] == ["failed", "failed"]
        assert detail["error"]["type"] == "DeadLettered"
        assert "maxReceiveCount (2)" in detail["error"]["message"]
        assert "Retryable: the model is overloaded" in detail["error"]["message"]
    (cluster,) = papayya.clusters(run_id=result.run_id)
    assert cluster.items == 2
    assert "DeadLettered" in cluster.label
    # And SQS moved both messages to the dead-letter queue: nothing is gone
    wait_until(lambda: sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0).get("Messages") is None, "moves")
    moved = queues.drain(dlq)
    assert sorted(m["MessageAttributes"][papayya_sqs.ITEM]["StringValue"] for m in moved) == sorted(
        str(i.item_id) for i in result.items()
    )


def test_malformed_oversized_and_tenantless_messages_are_dead_lettered_with_a_clear_error(
    rt: Runtime, tenant: str, sqs: Any, queues: Queues
) -> None:
    url, dlq = queues.make()
    assert dlq is not None
    papayya.configure(max_input_bytes=2000)
    rt = papayya.runtime.get_runtime()

    @agent
    def enrich(item: papayya.Item) -> str:
        return "ok"

    cases = [
        ("this is not json", tenant, "its body is not JSON"),
        (json.dumps([1, 2, 3]), tenant, "its body is a JSON list, not an object"),
        (json.dumps({"text": "x" * 5000}), tenant, "over the 2,000-byte limit"),
        (json.dumps({"text": "no tenant"}), None, "has no papayya_tenant attribute"),
        (json.dumps({"text": "a"}), " ", "has no papayya_tenant attribute"),
    ]
    bad = {send_own(sqs, url, body, who): (body, why) for body, who, why in cases}
    good = send_own(sqs, url, json.dumps({"text": "fine"}), tenant, key="good")
    with (
        Recorded("papayya.sqs") as logged,
        consuming(papayya_sqs.Consumer(url, agent=enrich, sqs=sqs, wait_seconds=1)) as consumer,
    ):
        wait_until(lambda: consumer.stats.dead_lettered == len(bad) and consumer.stats.succeeded == 1, "all")

    moved = queues.drain(dlq)
    assert len(moved) == len(bad)
    for m in moved:  # the original body, with the reason (naming the message) in an attribute
        reason = m["MessageAttributes"][papayya_sqs.ERROR]["StringValue"]
        ((body, why),) = [case for message_id, case in bad.items() if message_id in reason]
        assert m["Body"] == body
        assert why in reason
        assert any(reason in line for line in logged.lines)
    # Nothing was recorded for them; the good message ran
    assert [(r["key"], r["status"]) for r in items_of(rt, tenant)] == [("good", "succeeded")]
    assert good
    assert queues.drain(url) == []


def test_a_forged_tenant_attribute_for_another_tenants_item_is_refused(
    rt: Runtime, tenant: str, sqs: Any, queues: Queues
) -> None:
    url, dlq = queues.make()
    assert dlq is not None
    calls: list[str] = []

    @agent
    def enrich(item: papayya.Item) -> None:
        calls.append(item.id)

    victim = f"{tenant}-victim"
    run_id, (item_id,) = record_run(rt, victim, enrich.name, ["secret"])
    forged = {
        papayya_sqs.TENANT: {"DataType": "String", "StringValue": tenant},
        papayya_sqs.RUN: {"DataType": "String", "StringValue": str(run_id)},
        papayya_sqs.ITEM: {"DataType": "String", "StringValue": str(item_id)},
    }
    sqs.send_message(QueueUrl=url, MessageBody="{}", MessageAttributes=forged)
    with (
        Recorded("papayya.sqs") as logged,
        consuming(papayya_sqs.Consumer(url, agent=enrich, sqs=sqs, wait_seconds=1)) as consumer,
    ):
        wait_until(lambda: consumer.stats.refused == 1, "the refusal")

    assert calls == []
    (row,) = items_of(rt, victim)
    assert (row["status"], row["attempts"]) == ("queued", 0)
    assert items_of(rt, tenant) == []
    assert any(f"tenant {tenant!r} has no item {item_id}" in line for line in logged.lines)
    (moved,) = queues.drain(dlq)
    assert "forged or mistaken" in moved["MessageAttributes"][papayya_sqs.ERROR]["StringValue"]


def test_a_paused_tenant_parks_its_messages_and_resume_resends_exactly_those(
    rt: Runtime,
    tenant: str,
    sqs: Any,
    queues: Queues,
    sqs_backend: Any,
    fake: FakeProvider,
    client: openai.OpenAI,
) -> None:
    url, _ = queues.make()
    ran: Counter[str] = Counter()
    papayya.tenants.add(tenant)
    papayya.tenants.set_price(tenant, "openai", MODEL, input_mtok="1000", output_mtok="1000")
    papayya.tenants.set_budget(tenant, "0.1")
    fake.reply = lambda r: Reply("ok", input_tokens=20, output_tokens=5)

    @agent
    def enrich(item: papayya.Item) -> str:
        ran[item.id] += 1
        reply = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": item.id}], max_tokens=5
        )
        return str(reply.choices[0].message.content)

    rt = sqs_backend(url)
    keys = [f"k{i:02d}" for i in range(12)]
    with consuming(papayya_sqs.Consumer(url, agent=enrich, sqs=sqs, wait_seconds=1, concurrency=2)):
        # Given a budget with room for a few calls
        first = enrich.map([{"id": k} for k in keys], tenant=tenant)
        assert first.status == "paused"
        wait_until(lambda: queues.count(url) == 0, "every message to be deleted")
        done = {i.key for i in first.items(outcome="succeeded")}
        parked = {r["key"] for r in items_of(rt, tenant) if r["status"] == "paused"}
        assert done
        assert parked
        assert done | parked == set(keys)
        assert fake.count == len(done)
        assert sum(ran.values()) <= len(done) + 2  # parked messages did not run the agent
        # When the budget is raised and the run resumed
        papayya.tenants.set_budget(tenant, "100")
        before = dict(ran)
        resumed = enrich.resume(first.run_id)

    assert resumed.status == "completed"
    assert resumed.counts["succeeded"] == len(keys)
    # Then exactly the paused items ran again, and no recorded call was paid twice
    assert {k for k in keys if ran[k] > before.get(k, 0)} == parked
    assert fake.count == len(keys)


def test_replay_of_items_that_ran_on_sqs_sends_them_again(
    rt: Runtime, tenant: str, sqs: Any, queues: Queues, sqs_backend: Any
) -> None:
    url, _ = queues.make()
    broken = {"b1", "b2"}

    @agent
    def check(item: papayya.Item) -> str:
        if item.id in broken:
            raise ValueError(f"bad item {item.id}")
        return "ok"

    rt = sqs_backend(url)
    with consuming(papayya_sqs.Consumer(url, agent=check, sqs=sqs, wait_seconds=1)):
        first = check.map([{"id": k} for k in ["a1", "b1", "b2", "a2"]], tenant=tenant)
        assert first.counts["failed"] == 2
        broken.clear()
        replayed = check.replay(run=first.run_id, outcome="failed")

    assert replayed.counts == {"succeeded": 2, "degraded": 0, "failed": 0}
    run = rt.store.run_get(replayed.run_id, tenant)
    assert (run["backend"], run["replayed_from"]) == ("sqs", first.run_id)
    for item in replayed.items():
        (attempt,) = rt.store.item_detail(item.item_id, tenant)["attempts_detail"]
        assert attempt["backend"] == "sqs"


def test_a_replay_created_without_waiting_is_sent_to_the_queue_and_its_consumers_run_it(
    rt: Runtime, tenant: str, sqs: Any, queues: Queues, sqs_backend: Any
) -> None:
    url, _ = queues.make()
    broken = {"b1"}

    @agent
    def check(item: papayya.Item) -> str:
        if item.id in broken:
            raise ValueError(f"bad item {item.id}")
        return "ok"

    sqs_backend(url)
    with consuming(papayya_sqs.Consumer(url, agent=check, sqs=sqs, wait_seconds=1)):
        first = check.map([{"id": k} for k in ["a1", "b1"]], tenant=tenant)
    broken.clear()
    # Given a replay created without running it here (execute=False: a script, a scheduler) while
    # no consumer runs (with one running, it may finish the item before replay() returns)
    created = papayya.replay(run=first.run_id, outcome="failed", execute=False)
    assert created.counts.get("succeeded", 0) == 0
    # Then its item is on the queue: a consumer started later runs it, nobody here runs it
    with consuming(papayya_sqs.Consumer(url, agent=check, sqs=sqs, wait_seconds=1)):
        replayed = papayya.RunHandle(created.run_id, tenant).wait(timeout=60)
    assert replayed.counts["succeeded"] == 1


# The re-sent k0 arrives in the same receive as the original (one FIFO group); it used to be hidden to
# look again while the original ran, counted nowhere until a redelivery; once, under load, none was
# counted (received 7, succeeded 6, every other counter 0). Now it is a duplicate at once.
def test_a_fifo_queue_groups_by_tenant_and_deduplicates_by_item(
    rt: Runtime, tenant: str, sqs: Any, queues: Queues, sqs_backend: Any
) -> None:
    url, _ = queues.make(fifo=True)
    order: list[str] = []

    @agent
    def enrich(item: papayya.Item) -> str:
        order.append(item.id)
        return "ok"

    rt = sqs_backend(url, lease_seconds=2)
    handle = enrich.submit([{"id": f"k{i}"} for i in range(6)], tenant=tenant)
    backend = rt.backend
    assert isinstance(backend, SqsBackend)
    (first,) = sqs.receive_message(
        QueueUrl=url, MessageAttributeNames=["All"], MessageSystemAttributeNames=["All"]
    )["Messages"]
    assert first["Attributes"]["MessageGroupId"] == tenant
    item_id = uuid.UUID(first["MessageAttributes"][papayya_sqs.ITEM]["StringValue"])
    assert first["Attributes"]["MessageDeduplicationId"].startswith(item_id.hex)
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=first["ReceiptHandle"], VisibilityTimeout=0)
    # A batch sent again by the same send (a retried request) is deduplicated by item
    again = entries(
        [execute.ItemRef(item_id, "k0", handle.run_id, tenant)], fifo=True, fair=True, send_id="retry"
    )
    sqs.send_message_batch(QueueUrl=url, Entries=again)
    sqs.send_message_batch(QueueUrl=url, Entries=again)
    assert queues.count(url) == 7
    with consuming(papayya_sqs.Consumer(url, agent=enrich, sqs=sqs, wait_seconds=1)) as consumer:
        result = handle.wait(timeout=60)
        wait_until(lambda: queues.count(url) == 0, "the re-sent message to be dropped")
    assert result.counts["succeeded"] == 6
    assert sorted(order) == [f"k{i}" for i in range(6)]
    assert consumer.stats.duplicates == 1  # the re-sent k0: its item held by this consumer, or done
    assert consumer.stats.received == 7  # each message delivered once: the duplicate is not hidden
    assert_accounted(consumer.stats)


def assert_accounted(stats: papayya_sqs.ConsumerStats) -> None:
    """Every received message landed in exactly one outcome counter."""
    assert sum(stats.outcomes().values()) == stats.received, stats


def test_a_second_message_of_an_item_this_consumer_is_running_is_deleted_as_a_duplicate_at_once(
    rt: Runtime, tenant: str, sqs: Any, queues: Queues
) -> None:
    url, _ = queues.make()
    runs: Counter[str] = Counter()
    entered, release = threading.Event(), threading.Event()

    @agent
    def enrich(item: papayya.Item) -> str:
        runs[item.id] += 1
        entered.set()
        assert release.wait(30), "the test did not release the agent"
        return "ok"

    runtime = papayya.runtime.get_runtime()
    run_id, (item_id,) = record_run(runtime, tenant, enrich.name, ["k"])
    ref = execute.ItemRef(item_id, "k", run_id, tenant)
    # Given two messages of one item (a re-send), both received by one consumer
    sqs.send_message_batch(QueueUrl=url, Entries=entries([ref, ref], fifo=False, fair=False, send_id="x"))
    with consuming(
        papayya_sqs.Consumer(url, agent=enrich, sqs=sqs, wait_seconds=1, reaper=False)
    ) as consumer:
        # When the second is handled while the first one's attempt runs (the agent waits for the test)
        wait_until(entered.is_set, "the first message's attempt to start")
        wait_until(lambda: consumer.stats.received == 2, "the second message")
        # Then it is deleted as a duplicate at once, counted, not hidden to look again
        wait_until(lambda: consumer.stats.duplicates == 1, "the second message to be dropped as a duplicate")
        assert queues.count(url) == 1  # only the running one's message is left
        release.set()
        wait_until(lambda: consumer.stats.succeeded == 1, "the item")
        wait_until(lambda: queues.count(url) == 0, "the first message to be deleted")
    assert runs == {"k": 1}
    assert consumer.stats.received == 2
    assert consumer.stats.outcomes() == {
        **dict.fromkeys(consumer.stats.OUTCOMES, 0),
        "succeeded": 1,
        "duplicates": 1,
    }


def test_a_message_whose_item_another_attempt_holds_is_hidden_and_counted_as_held(
    rt: Runtime, tenant: str, sqs: Any, queues: Queues
) -> None:
    url, _ = queues.make()

    @agent
    def enrich(item: papayya.Item) -> str:
        raise AssertionError("the item is held by another attempt: this consumer must not run it")

    runtime = papayya.runtime.get_runtime()
    run_id, (item_id,) = record_run(runtime, tenant, enrich.name, ["held"])
    ref = execute.ItemRef(item_id, "held", run_id, tenant)
    # Given the item held by a live attempt elsewhere (another consumer)
    ctx = execute.begin(runtime, enrich, ref, backend="sqs", price_overrides={})
    assert ctx is not None
    sqs.send_message_batch(QueueUrl=url, Entries=entries([ref], fifo=False, fair=False, send_id="x"))
    with consuming(
        papayya_sqs.Consumer(url, agent=enrich, sqs=sqs, wait_seconds=1, reaper=False)
    ) as consumer:
        # Then its message is hidden to look again once that lease could have expired, and counted
        wait_until(lambda: consumer.stats.held == 1, "the message to be hidden")
    assert consumer.stats.received == 1
    assert_accounted(consumer.stats)
    assert queues.count(url) == 1  # still on the queue, hidden
    execute.release(ctx)


def test_the_reaper_of_a_consumer_sends_a_stalled_item_again(
    rt: Runtime, tenant: str, sqs: Any, queues: Queues
) -> None:
    url, _ = queues.make()

    @agent
    def enrich(item: papayya.Item) -> str:
        return f"done {item.id}"

    papayya.configure(lease_seconds=0.5)
    runtime = papayya.runtime.get_runtime()
    run_id, (item_id,) = record_run(runtime, tenant, enrich.name, ["lost"])
    ref = execute.ItemRef(item_id, "lost", run_id, tenant)
    # Given an attempt whose consumer died (begun, never concluded) and whose message is gone
    ctx = execute.begin(runtime, enrich, ref, backend="sqs", price_overrides={})
    assert ctx is not None
    wait_until(lambda: runtime.store.run_progress(run_id, tenant)["expired"] == 1, "the lease to expire")
    # When a consumer serving the agent runs (its reaper sweeps)
    with consuming(papayya_sqs.Consumer(url, agent=enrich, sqs=sqs, wait_seconds=1)):
        wait_until(lambda: items_of(runtime, tenant)[0]["status"] == "succeeded", "the re-driven item")
    attempts = runtime.store.item_detail(item_id, tenant)["attempts_detail"]
    assert [a["status"] for a in attempts] == ["stalled", "succeeded"]
    assert reaper.sweep(runtime).stalled == []


def test_without_a_queue_url_map_fails_in_one_sentence_and_the_run_waits_paused(
    rt: Runtime, tenant: str, sqs: Any
) -> None:
    @agent
    def enrich(item: papayya.Item) -> None:
        pass

    papayya.configure(backend="sqs")
    with pytest.raises(papayya.ConfigError, match="set PAPAYYA_SQS_QUEUE_URL") as caught:
        enrich.map([{"id": "a"}], tenant=tenant)
    assert "papayya resume" in str(caught.value)
    (row,) = items_of(papayya.runtime.get_runtime(), tenant)
    assert (row["status"], row["run_status"]) == ("queued", "paused")
