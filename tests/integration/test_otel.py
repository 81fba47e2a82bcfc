"""OpenTelemetry export: a real map() with the real openai client on the fake provider, its spans and
metrics read back from the SDK's in-memory exporter and reader."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Any

import openai
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import papayya
import papayya_openai
import papayya_otel
from papayya import ConfigError, Retryable, agent, run
from papayya.runtime import Runtime, get_runtime
from papayya.testing import FakeProvider, Reply

MODEL = "gpt-4o-mini"


class Otel:
    """The in-memory ends of a tracer and a meter provider."""

    def __init__(self, *processors: SpanProcessor) -> None:
        self.spans = InMemorySpanExporter()
        self.reader = InMemoryMetricReader()
        self.tracer_provider = TracerProvider()
        for p in processors:
            self.tracer_provider.add_span_processor(p)
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def finished(self, name: str | None = None) -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if name is None or s.name == name]

    def points(self, metric: str) -> list[tuple[dict[str, Any], Any]]:
        """(attributes, value) of each data point of ``metric``: a sum's value, a histogram's count."""
        found = []
        data = self.reader.get_metrics_data()
        for rm in data.resource_metrics if data else ():
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == metric:
                        for p in m.data.data_points:
                            found.append(
                                (dict(p.attributes or {}), getattr(p, "value", getattr(p, "count", None)))
                            )
        return found


@pytest.fixture
def otel(rt: Runtime) -> Iterator[Otel]:
    o = Otel()
    papayya_otel.enable(tracer_provider=o.tracer_provider, meter_provider=o.meter_provider)
    yield o
    papayya_otel.disable()
    o.tracer_provider.shutdown()
    o.meter_provider.shutdown()


@pytest.fixture
def client(fake: FakeProvider) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fake.openai_url, api_key="test", max_retries=0) as c:
        yield papayya_openai.instrument(c)


def ask(client: openai.OpenAI, text: str, **kwargs: Any) -> str:
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": text}], **kwargs
    )
    return reply.choices[0].message.content or ""


def children(otel: Otel, parent: ReadableSpan) -> list[ReadableSpan]:
    assert parent.context is not None
    return [s for s in otel.finished() if s.parent is not None and s.parent.span_id == parent.context.span_id]


def by_item(spans: Sequence[ReadableSpan]) -> dict[str, ReadableSpan]:
    return {str((s.attributes or {})["papayya.item.key"]): s for s in spans}


def test_each_attempt_is_a_span_under_the_callers_span_with_its_llm_calls_as_children(
    otel: Otel, tenant: str, fake: FakeProvider, client: openai.OpenAI
) -> None:
    fake.reply = lambda r: Reply(f"about {r.last_user_message}", input_tokens=900, cached_tokens=512)

    @agent
    def summarize(item):
        first = ask(client, f"outline {item.id}")
        return {"summary": ask(client, f"summarise {first}")}

    tracer = otel.tracer_provider.get_tracer("the-users-app")
    with tracer.start_as_current_span("nightly batch") as batch:
        result = summarize.map([{"id": f"doc-{i}"} for i in range(3)], tenant=tenant)

    assert result.counts["succeeded"] == 3
    attempts = by_item(otel.finished("papayya.attempt"))
    assert set(attempts) == {"doc-0", "doc-1", "doc-2"}
    items = {i.key: i for i in result.items()}
    for key, span in attempts.items():
        assert span.parent is not None
        assert span.parent.span_id == batch.get_span_context().span_id
        attrs = dict(span.attributes or {})
        assert attrs["papayya.tenant.id"] == tenant
        assert attrs["papayya.run.id"] == str(result.run_id)
        assert attrs["papayya.item.id"] == str(items[key].item_id)
        assert attrs["papayya.attempt"] == 1
        assert attrs["papayya.backend"] == "native"
        assert attrs["papayya.outcome"] == "succeeded"
        assert attrs["papayya.reasons"] == ()
        assert Decimal(str(attrs["papayya.cost_usd"])) == pytest.approx(items[key].cost_usd)
        assert span.status.status_code == StatusCode.UNSET

        calls = children(otel, span)
        assert [c.name for c in calls] == [f"chat {MODEL}", f"chat {MODEL}"]
        for call in calls:
            c = dict(call.attributes or {})
            assert call.kind == SpanKind.CLIENT
            assert c["gen_ai.operation.name"] == "chat"
            assert c["gen_ai.provider.name"] == c["gen_ai.system"] == "openai"
            assert c["gen_ai.request.model"] == MODEL
            assert c["gen_ai.usage.input_tokens"] == 900
            assert c["gen_ai.usage.output_tokens"] > 0
            assert c["gen_ai.usage.cache_read.input_tokens"] == 512
            assert c["gen_ai.response.finish_reasons"] == ("stop",)
            assert c["papayya.cost_usd"] > 0
            assert call.start_time is not None
            assert call.end_time is not None
            assert span.start_time is not None
            assert span.end_time is not None
            assert span.start_time <= call.start_time < call.end_time <= span.end_time
        assert sum(dict(c.attributes or {})["papayya.cost_usd"] for c in calls) == pytest.approx(
            attrs["papayya.cost_usd"]
        )


def test_a_call_answered_from_the_journal_is_an_event_on_the_retry_not_a_second_client_span(
    otel: Otel, tenant: str, fake: FakeProvider, client: openai.OpenAI
) -> None:
    @agent(retries=1, backoff=0)
    def summarize(item):
        answer = ask(client, f"summarise {item.id}")
        if run.attempt == 1:
            raise ConnectionError("lost after the call was paid")
        return {"summary": answer}

    (item,) = summarize.map([{"id": "doc"}], tenant=tenant).items()
    assert (item.status, fake.count) == ("succeeded", 1)
    spans = otel.finished("papayya.attempt")
    first, retry = sorted(spans, key=lambda s: int(str(dict(s.attributes or {})["papayya.attempt"])))
    # The paid call is one client span under the first attempt; the retry's answer is an event, not a call
    assert [c.name for c in children(otel, first)] == [f"chat {MODEL}"]
    assert children(otel, retry) == []
    (event,) = [e for e in retry.events if e.name == "papayya.llm.from_journal"]
    assert dict(event.attributes or {})["gen_ai.request.model"] == MODEL
    assert dict(event.attributes or {})["gen_ai.response.finish_reasons"] == ("stop",)


def test_metrics_count_cost_items_and_attempt_time(otel: Otel, tenant: str, client: openai.OpenAI) -> None:
    @agent(retries=2, backoff=0)
    def answer(item):
        text = ask(client, f"question {item.id}", max_completion_tokens=2 if item.id == "short" else None)
        if item.id == "flaky" and papayya.run.attempt == 1:
            raise Retryable("try again")
        if item.id == "broken":
            raise ValueError("no answer for this one")
        return {"text": text}

    result = answer.map([{"id": k} for k in ("fine", "short", "flaky", "broken")], tenant=tenant)

    assert result.counts == {"succeeded": 2, "degraded": 1, "failed": 1}
    cost = otel.points("papayya.cost")
    assert [a for a, _ in cost] == [
        {"papayya.tenant.id": tenant, "gen_ai.request.model": MODEL, "gen_ai.provider.name": "openai"}
    ]
    assert Decimal(str(cost[0][1])) == pytest.approx(result.cost_usd)
    items = {
        a["papayya.outcome"]: v for a, v in otel.points("papayya.items") if a["papayya.tenant.id"] == tenant
    }
    assert items == {"succeeded": 2, "degraded": 1, "failed": 1}
    durations = {a["papayya.outcome"]: n for a, n in otel.points("papayya.attempt.duration")}
    assert durations == {"succeeded": 2, "degraded": 1, "failed": 2}  # flaky failed once, then succeeded

    attempts = otel.finished("papayya.attempt")
    flaky = sorted(
        (
            dict(s.attributes or {})
            for s in attempts
            if dict(s.attributes or {})["papayya.item.key"] == "flaky"
        ),
        key=lambda a: a["papayya.attempt"],
    )
    assert [(a["papayya.attempt"], a["papayya.outcome"]) for a in flaky] == [(1, "failed"), (2, "succeeded")]
    short = by_item(attempts)["short"]
    assert dict(short.attributes or {})["papayya.reasons"] == ("llm_stop_reason: length",)
    assert dict(children(otel, short)[0].attributes or {})["gen_ai.response.finish_reasons"] == ("length",)
    broken = by_item(attempts)["broken"]
    assert broken.status.status_code == StatusCode.ERROR
    assert dict(broken.attributes or {})["papayya.outcome"] == "failed"


def test_an_async_agents_calls_are_children_of_its_attempt(
    otel: Otel, tenant: str, fake: FakeProvider
) -> None:
    aclient = papayya_openai.instrument(
        openai.AsyncOpenAI(base_url=fake.openai_url, api_key="test", max_retries=0)
    )

    @agent
    async def reply(item):
        answers = await asyncio.gather(
            *(
                aclient.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": f"{item.id} {n}"}]
                )
                for n in range(2)
            )
        )
        return {"n": len(answers)}

    result = reply.map([{"id": "a"}, {"id": "b"}], tenant=tenant)

    assert result.counts["succeeded"] == 2
    for span in otel.finished("papayya.attempt"):
        assert [c.name for c in children(otel, span)] == [f"chat {MODEL}"] * 2


class RaisingExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        raise ConnectionError("collector unreachable")


class RaisingProcessor(SpanProcessor):
    def on_end(self, span: ReadableSpan) -> None:
        raise RuntimeError("a broken span processor")


def test_a_raising_exporter_or_processor_never_touches_the_items_outcome(
    rt: Runtime, tenant: str, client: openai.OpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    # Given an exporter that raises on every span and a span processor that raises on every end
    broken = Otel(SimpleSpanProcessor(RaisingExporter()), RaisingProcessor())
    papayya_otel.enable(tracer_provider=broken.tracer_provider, meter_provider=broken.meter_provider)
    try:

        @agent
        def summarize(item):
            return {"text": ask(client, item.id)}

        # When items run and call the LLM
        with caplog.at_level(logging.ERROR):
            result = summarize.map([{"id": "a"}, {"id": "b"}], tenant=tenant)
    finally:
        papayya_otel.disable()
        broken.tracer_provider.shutdown()

    # Then they succeed: not failed, and not degraded as if the exporter's log were the agent's
    assert result.counts == {"succeeded": 2, "degraded": 0, "failed": 0}
    assert result.llm_calls == 2
    assert "OpenTelemetry export failed in papayya_llm_call_recorded" in caplog.text
    assert "OpenTelemetry export failed in papayya_attempt_finished" in caplog.text


def test_trace_context_crosses_a_queue_in_headers(otel: Otel, tenant: str) -> None:
    tracer = otel.tracer_provider.get_tracer("the-users-app")
    # The publisher stamps the message ...
    with tracer.start_as_current_span("publish") as publish:
        headers = papayya_otel.inject({"papayya-tenant": tenant})
    assert headers["traceparent"].startswith("00-")
    assert f"{publish.get_span_context().trace_id:032x}" in headers["traceparent"]

    @agent
    def consume(item):
        return {"ok": True}

    # ... and the consumer runs the item inside the context it carries.
    with papayya_otel.attached(headers):
        consume.map([{"id": "m-1"}], tenant=tenant)

    (attempt,) = otel.finished("papayya.attempt")
    assert attempt.parent is not None
    assert attempt.parent.is_remote
    assert attempt.parent.span_id == publish.get_span_context().span_id


def test_propagation_without_a_span_or_headers_does_nothing() -> None:
    assert papayya_otel.inject({"a": "b"}) == {"a": "b"}
    assert papayya_otel.extract(None) is None
    assert papayya_otel.extract({"traceparent": "garbage"}) is None
    with papayya_otel.attached({}):
        pass


def test_the_otel_setting_registers_the_exporter(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    assert get_runtime().pm.get_plugin("papayya_otel") is None
    monkeypatch.setenv("PAPAYYA_OTEL", "1")
    papayya.reset()
    assert get_runtime().pm.get_plugin("papayya_otel") is not None
    monkeypatch.delenv("PAPAYYA_OTEL")
    papayya.reset()


def test_without_the_extra_the_setting_is_one_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.trace", None)
    with pytest.raises(ConfigError, match=r"pip install 'papayya\[otel\]'"):
        papayya_otel.enable()


def test_after_concurrent_calls_a_swallowed_exception_is_still_seen(
    rt: Runtime, tenant: str, fake: FakeProvider
) -> None:
    # Given an exporter that raises (and logs) on every span, and calls made concurrently
    broken = Otel(SimpleSpanProcessor(RaisingExporter()))
    papayya_otel.enable(tracer_provider=broken.tracer_provider, meter_provider=broken.meter_provider)
    aclient = papayya_openai.instrument(
        openai.AsyncOpenAI(base_url=fake.openai_url, api_key="test", max_retries=0)
    )
    log = logging.getLogger("the_users_agent")

    @agent
    async def answer(item):
        await asyncio.gather(
            *(
                aclient.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": str(n)}])
                for n in range(4)
            )
        )
        try:
            raise KeyError("missing field")
        except KeyError:
            log.exception("no field, using a default")
        return {"ok": True}

    try:
        result = answer.map([{"id": "a"}], tenant=tenant)
    finally:
        papayya_otel.disable()
        broken.tracer_provider.shutdown()

    # Then the exporter's errors are not the agent's, and the agent's own swallowed exception still is
    (item,) = result.items()
    assert [r["code"] for r in item.reasons] == ["swallowed_exception"]
