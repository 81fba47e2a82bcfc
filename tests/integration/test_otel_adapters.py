"""Trace context across the queue hop of each adapter: a span opened around ``map()`` in the caller is
the parent of the ``papayya.attempt`` span a worker records, though the worker runs the item on
another thread (Celery's ``start_worker``, the SQS consumer's pool, the Temporal activity executor),
where the caller's context is not current: only what the message carries links them."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery import Celery
from opentelemetry.sdk.trace import ReadableSpan
from temporalio import activity

import papayya
import papayya_celery
import papayya_otel
import papayya_sqs
from papayya import agent
from papayya.execute import ItemRef
from papayya.runtime import Runtime
from papayya_sqs.queue import MAX_ATTRIBUTES, Queue
from papayya_temporal import MapItems
from tests.integration.test_celery import celery_backend, make_app, worker
from tests.integration.test_otel import Otel
from tests.integration.test_sqs import Queues, consuming, moto_endpoint, queues, sqs, sqs_backend
from tests.integration.test_temporal import queue
from tests.integration.test_temporal_env import TemporalHarness, temporal

__all__ = ["make_app", "moto_endpoint", "queue", "queues", "sqs", "sqs_backend", "temporal"]


@pytest.fixture
def otel() -> Iterator[Callable[[], Otel]]:
    """``otel()``: export to in-memory ends from the next ``map()`` on (call it after choosing the
    backend, which builds a new runtime)."""
    made: list[Otel] = []

    def start() -> Otel:
        o = Otel()
        papayya_otel.enable(tracer_provider=o.tracer_provider, meter_provider=o.meter_provider)
        made.append(o)
        return o

    yield start
    papayya_otel.disable()
    for o in made:
        o.tracer_provider.shutdown()
        o.meter_provider.shutdown()


def assert_children_of(attempts: list[ReadableSpan], parent: Any, n: int) -> None:
    """``n`` attempt spans, each in ``parent``'s trace with ``parent`` as their (remote) parent."""
    assert len(attempts) == n
    ctx = parent.get_span_context()
    for span in attempts:
        assert span.context is not None
        assert span.context.trace_id == ctx.trace_id
        assert span.parent is not None
        assert span.parent.is_remote  # it came from the message, not from a context shared in-process
        assert span.parent.span_id == ctx.span_id


def test_celery_attempts_are_children_of_the_span_that_called_map(
    rt: Runtime, tenant: str, make_app: Callable[..., Celery], otel: Callable[[], Otel]
) -> None:
    app = make_app()

    @app.task(shared=False, acks_late=True)
    @agent
    def enrich(item: papayya.Item) -> dict[str, Any]:
        return {"key": item.id}

    celery_backend()
    o = otel()
    tracer = o.tracer_provider.get_tracer("the-users-app")
    with worker(app):
        with tracer.start_as_current_span("nightly batch") as batch:
            result = enrich.map([{"id": f"d{i}"} for i in range(3)], tenant=tenant)
        assert result.counts["succeeded"] == 3

        # The team's own publish is stamped with the publisher's span too
        with tracer.start_as_current_span("own publish") as own:
            enrich.apply_async(({"text": "a"},), headers=papayya_celery.headers(tenant, key="own-1")).get(
                timeout=30
            )

    attempts = {key: [s for s in o.finished("papayya.attempt") if key_of(s) == key] for key in ("d", "own")}
    assert_children_of(attempts["d"], batch, 3)
    assert_children_of(attempts["own"], own, 1)


def key_of(span: ReadableSpan) -> str:
    return str((span.attributes or {})["papayya.item.key"]).rstrip("0123456789").rstrip("-")


def test_sqs_attempts_are_children_of_the_span_that_called_map(
    rt: Runtime,
    tenant: str,
    sqs: Any,
    queues: Queues,
    sqs_backend: Callable[..., Runtime],
    otel: Callable[[], Otel],
) -> None:
    url, _ = queues.make()

    @agent
    def enrich(item: papayya.Item) -> dict[str, Any]:
        return {"key": item.id}

    sqs_backend(url)
    o = otel()
    tracer = o.tracer_provider.get_tracer("the-users-app")
    with (
        consuming(papayya_sqs.Consumer(url, agent=enrich, sqs=sqs, wait_seconds=1)),
        tracer.start_as_current_span("nightly batch") as batch,
    ):
        result = enrich.map([{"id": f"d{i}"} for i in range(12)], tenant=tenant)  # two batches of sends

    assert result.counts["succeeded"] == 12
    assert_children_of(o.finished("papayya.attempt"), batch, 12)


def test_sqs_messages_carry_traceparent_within_the_attribute_limit(
    rt: Runtime, tenant: str, sqs: Any, queues: Queues, otel: Callable[[], Otel]
) -> None:
    url, _ = queues.make()
    o = otel()
    refs = [ItemRef(uuid.uuid4(), "k", uuid.uuid4(), tenant)]
    with o.tracer_provider.get_tracer("t").start_as_current_span("send") as send:
        Queue(url, sqs).send(refs)
    (msg,) = queues.drain(url)
    attrs = msg["MessageAttributes"]
    assert len(attrs) <= MAX_ATTRIBUTES
    assert attrs["traceparent"]["DataType"] == "String"
    assert f"{send.get_span_context().span_id:016x}" in attrs["traceparent"]["StringValue"]


@activity.defn
@agent
async def traced_activity(item: papayya.Item) -> dict[str, Any]:
    return {"key": item.id}


@pytest.mark.postgres
@pytest.mark.slow
def test_temporal_attempts_are_children_of_the_span_that_called_map(
    rt: Runtime, tenant: str, temporal: TemporalHarness, queue: str, otel: Callable[[], Otel]
) -> None:
    o = otel()
    tracer = o.tracer_provider.get_tracer("the-users-app")
    with (
        temporal.worker(queue, activities=[traced_activity], workflows=[MapItems]),
        tracer.start_as_current_span("nightly batch") as batch,
    ):
        result = traced_activity.map([{"id": f"d{i}"} for i in range(3)], tenant=tenant)

    assert result.counts["succeeded"] == 3
    assert_children_of(o.finished("papayya.attempt"), batch, 3)
