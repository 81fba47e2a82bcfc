"""The exporter: a papayya plugin that turns attempts, LLM calls and outcomes into spans and metrics.

Spans of an attempt are kept by attempt id from ``papayya_attempt_started`` to
``papayya_attempt_finished``; an attempt that never finishes in this process (its lease went to
another worker) is dropped with its context, never exported half-done. Every hook is guarded: an
exporter or SDK that raises is logged and the item carries on as if nothing happened.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from uuid import UUID

from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from papayya.context import current
from papayya.hookspecs import hookimpl

if TYPE_CHECKING:
    from papayya.context import AttemptContext
    from papayya.models import LLMCall, Reason

log = logging.getLogger("papayya.otel")

SCOPE = "papayya"

# Attribute names. GenAI ones follow the OpenTelemetry GenAI semantic conventions; there is no
# standard attribute for a call's cost yet, so it is papayya's own.
TENANT = "papayya.tenant.id"
RUN = "papayya.run.id"
ITEM = "papayya.item.id"
ITEM_KEY = "papayya.item.key"
ATTEMPT = "papayya.attempt"
BACKEND = "papayya.backend"
AGENT = "papayya.agent"
OUTCOME = "papayya.outcome"
REASONS = "papayya.reasons"
COST = "papayya.cost_usd"
COST_UNKNOWN = "papayya.cost_unknown"
STEP = "papayya.step"
OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
SYSTEM = "gen_ai.system"  # the older name of gen_ai.provider.name, still read by many backends
MODEL = "gen_ai.request.model"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
CACHE_READ_TOKENS = "gen_ai.usage.cache_read.input_tokens"
CACHE_WRITE_TOKENS = "gen_ai.usage.cache_creation.input_tokens"
FINISH_REASONS = "gen_ai.response.finish_reasons"
JOURNAL_EVENT = "papayya.llm.from_journal"  # an LLM call answered from the journal (not paid again)


@contextmanager
def _guard(hook: str) -> Iterator[None]:
    """Observers never break the host: log what raised and carry on."""
    # Inside the user's function papayya reads ERROR logs with a traceback as "an exception was
    # swallowed" and degrades the item; an exporter's own error log is not the user's doing. Hiding
    # the attempt from this context (not clearing a flag on it) is safe with concurrent calls.
    token = current.set(None)
    try:
        yield
    except Exception:
        log.exception("OpenTelemetry export failed in %s; ignored", hook)
    finally:
        current.reset(token)


def operation(step_key: str | None) -> str:
    """The GenAI operation of a recorded call, from its step (``llm:openai.embeddings#1``)."""
    return "embeddings" if step_key and "embed" in step_key.lower() else "chat"


def _money(value: Decimal) -> float:
    return float(value)


class OtelPlugin:
    """Spans and metrics for one runtime. Thread-safe: hooks fire from worker and writer threads."""

    def __init__(self, tracer_provider: Any = None, meter_provider: Any = None) -> None:
        from papayya import __version__

        self._tracer = trace.get_tracer(SCOPE, __version__, tracer_provider=tracer_provider)
        meter = metrics.get_meter(SCOPE, __version__, meter_provider=meter_provider)
        self._cost = meter.create_counter(
            "papayya.cost", unit="USD", description="What priced LLM calls cost, by tenant, model, provider."
        )
        self._items = meter.create_counter(
            "papayya.items", unit="{item}", description="Items that reached an outcome, by tenant, outcome."
        )
        self._duration = meter.create_histogram(
            "papayya.attempt.duration", unit="s", description="How long attempts of items took."
        )
        self._lock = threading.Lock()
        self._open: dict[UUID, trace.Span] = {}

    # -- attempts ---------------------------------------------------------------------------------

    @hookimpl
    def papayya_attempt_started(self, ctx: AttemptContext) -> None:
        with _guard("papayya_attempt_started"):
            span = self._tracer.start_span(
                "papayya.attempt",
                kind=SpanKind.INTERNAL,
                attributes={
                    TENANT: ctx.tenant_id,
                    RUN: str(ctx.run_id),
                    ITEM: str(ctx.item_id),
                    ITEM_KEY: ctx.item.id,
                    ATTEMPT: ctx.attempt,
                    BACKEND: ctx.backend,
                    AGENT: ctx.agent.name,
                },
            )
            with self._lock:
                self._open[ctx.attempt_id] = span
            weakref.finalize(ctx, self._forget, ctx.attempt_id)

    @hookimpl
    def papayya_attempt_finished(self, ctx: AttemptContext, status: str, reasons: list[Reason]) -> None:
        with _guard("papayya_attempt_finished"):
            with self._lock:
                span = self._open.pop(ctx.attempt_id, None)
            self._duration.record(
                max(0.0, time.monotonic() - ctx.started),
                {TENANT: ctx.tenant_id, OUTCOME: status, BACKEND: ctx.backend},
            )
            if span is None:
                return
            span.set_attributes({OUTCOME: status, REASONS: _labels(reasons)})
            if not (ctx.cost_unknown and ctx.cost_usd == 0):
                span.set_attribute(COST, _money(ctx.cost_usd))
            if ctx.cost_unknown:
                span.set_attribute(COST_UNKNOWN, True)
            if status == "failed":
                span.set_status(Status(StatusCode.ERROR, "the attempt failed"))
            span.end()

    @hookimpl
    def papayya_outcome_recorded(self, ctx: AttemptContext, outcome: str, reasons: list[Reason]) -> None:
        with _guard("papayya_outcome_recorded"):
            self._items.add(1, {TENANT: ctx.tenant_id, OUTCOME: outcome})

    def _forget(self, attempt_id: UUID) -> None:
        with self._lock:
            self._open.pop(attempt_id, None)

    # -- LLM calls --------------------------------------------------------------------------------

    @hookimpl
    def papayya_llm_call_replayed(
        self, ctx: AttemptContext, step_key: str, provider: str, model: str | None, stop_reason: str | None
    ) -> None:
        # Answered from the journal: no request, no cost. An event on the attempt's span says so; no
        # client span and no cost metric, so traces and spend count each paid call once.
        with _guard("papayya_llm_call_replayed"):
            with self._lock:
                parent = self._open.get(ctx.attempt_id)
            if parent is None:
                return
            attributes: dict[str, Any] = {STEP: step_key, PROVIDER: provider, MODEL: model or "unknown"}
            if stop_reason is not None:
                attributes[FINISH_REASONS] = [stop_reason]
            parent.add_event(JOURNAL_EVENT, attributes)

    @hookimpl
    def papayya_llm_call_recorded(self, call: LLMCall) -> None:
        with _guard("papayya_llm_call_recorded"):
            with self._lock:
                parent = self._open.get(call.attempt_id)
            op = operation(call.step_key)
            attributes: dict[str, Any] = {
                OPERATION: op,
                PROVIDER: call.provider,
                SYSTEM: call.provider,
                MODEL: call.model,
                INPUT_TOKENS: call.input_tokens,
                OUTPUT_TOKENS: call.output_tokens,
                TENANT: call.tenant_id,
                RUN: str(call.run_id),
                ITEM: str(call.item_id),
            }
            if call.cache_read_tokens:
                attributes[CACHE_READ_TOKENS] = call.cache_read_tokens
            if call.cache_write_tokens:
                attributes[CACHE_WRITE_TOKENS] = call.cache_write_tokens
            if call.stop_reason is not None:
                attributes[FINISH_REASONS] = [call.stop_reason]
            if call.step_key is not None:
                attributes[STEP] = call.step_key
            if call.cost_usd is None:
                attributes[COST_UNKNOWN] = True
            else:
                attributes[COST] = _money(call.cost_usd)
            # The call is recorded after it returned: its span ends now and began `latency` ago.
            end = time.time_ns()
            start = end - int((call.latency_ms or 0.0) * 1_000_000)
            span = self._tracer.start_span(
                f"{op} {call.model}",
                context=trace.set_span_in_context(parent) if parent is not None else None,
                kind=SpanKind.CLIENT,
                attributes=attributes,
                start_time=start,
            )
            span.end(end_time=end)
            if call.cost_usd is not None:
                where = {TENANT: call.tenant_id, MODEL: call.model, PROVIDER: call.provider}
                self._cost.add(_money(call.cost_usd), where)


def _labels(reasons: Sequence[Reason]) -> list[str]:
    return [r.label() for r in reasons]
