"""W3C trace context across a queue hop: ``inject`` where a message is published, ``attached`` where
it is consumed, so the consumer's ``papayya.attempt`` span is a child of the publisher's span.

Each is a no-op when the OpenTelemetry API is not installed, so an adapter can call it unconditionally.
Headers are plain ``str -> str`` mappings (``traceparent``, ``tracestate``, ``baggage``); an adapter
whose transport needs another shape (SQS message attributes, Temporal payloads) converts them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any

log = logging.getLogger("papayya.otel")

_available: bool | None = None


def _api() -> bool:
    global _available
    if _available is None:
        try:
            import opentelemetry.propagate  # noqa: F401

            _available = True
        except ImportError:
            _available = False
    return _available


def inject(headers: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Add the current trace context to ``headers`` (in place) and return them.

    Nothing is added outside a sampled span or without OpenTelemetry; a failing propagator is logged.
    """
    if not _api():
        return headers
    try:
        from opentelemetry import propagate

        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        headers.update(carrier)
    except Exception:
        log.exception("could not add the trace context to a message; it is sent without it")
    return headers


def fields() -> frozenset[str]:
    """The header names the global propagator writes (``traceparent``, ``tracestate``, ``baggage`` by
    default); empty without OpenTelemetry."""
    if not _api():
        return frozenset()
    try:
        from opentelemetry import propagate

        return frozenset(propagate.get_global_textmap().fields)
    except Exception:
        log.exception("could not read the trace propagator's fields")
        return frozenset()


def extract(headers: Mapping[str, Any] | None) -> Any:
    """The OpenTelemetry context carried by ``headers`` (an ``opentelemetry.context.Context``), or
    None without OpenTelemetry or when they carry nothing usable."""
    if not headers or not _api():
        return None
    try:
        from opentelemetry import propagate, trace

        carrier = {str(k): v for k, v in headers.items() if isinstance(v, str)}
        found = propagate.extract(carrier)
        # Nothing carried: keep the consumer's own context rather than attaching an empty one.
        return found if trace.get_current_span(found).get_span_context().is_valid else None
    except Exception:
        log.exception("could not read the trace context of a message; it runs without it")
        return None


@contextmanager
def attached(headers: Mapping[str, Any] | None) -> Iterator[None]:
    """Run the block with the context ``headers`` carry as the current one (a no-op without any)."""
    found = extract(headers)
    if found is None:
        yield
        return
    from opentelemetry import context

    token = context.attach(found)
    try:
        yield
    finally:
        context.detach(token)
