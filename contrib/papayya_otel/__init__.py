"""papayya_otel: papayya's attempts, LLM calls, costs and outcomes as OpenTelemetry spans and metrics.

Enable it with one setting, ``PAPAYYA_OTEL=1`` (or ``otel = true`` in ``[tool.papayya]``), which
exports through the global tracer and meter providers, or in code::

    import papayya_otel

    papayya_otel.enable(tracer_provider=provider, meter_provider=meter_provider)

Spans: ``papayya.attempt`` for each attempt of an item (a child of the context it starts in), with a
``chat {model}`` child for each LLM call it paid for (GenAI semantic conventions, plus
``papayya.cost_usd``). Metrics: ``papayya.cost`` (USD), ``papayya.items`` (by outcome) and
``papayya.attempt.duration`` (seconds). An exporter that fails is logged; it never fails an item.

Across a queue, :func:`inject` adds the W3C ``traceparent`` of the current context to a message's
headers and :func:`attached` makes it the current context where the message is consumed.

Needs the ``otel`` extra: ``pip install 'papayya[otel]'``. See docs/otel.md.
"""

from __future__ import annotations

from papayya_otel.propagation import attached, extract, inject
from papayya_otel.setup import disable, enable, register

__all__ = [
    "attached",  # trace context across queues
    "disable",  # switching it on and off
    "enable",
    "extract",
    "inject",
    "register",
]
