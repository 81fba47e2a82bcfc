"""Switching the exporter on: ``enable()`` in code, or the ``otel`` setting read by the runtime."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from papayya.errors import ConfigError

if TYPE_CHECKING:
    import pluggy

PLUGIN_NAME = "papayya_otel"

_lock = threading.Lock()
_providers: dict[str, Any] = {"tracer": None, "meter": None}


def require_otel() -> None:
    """ConfigError (one sentence naming the extra) when the OpenTelemetry packages are missing."""
    try:
        import opentelemetry.metrics
        import opentelemetry.trace  # noqa: F401
    except ImportError:
        raise ConfigError(
            "OpenTelemetry export (PAPAYYA_OTEL) needs the OpenTelemetry packages; "
            "pip install 'papayya[otel]', or unset PAPAYYA_OTEL."
        ) from None


def enable(tracer_provider: Any = None, meter_provider: Any = None) -> None:
    """Export papayya's spans and metrics from now on, in this process.

    Args:
        tracer_provider: Where spans go; None for the global one (``opentelemetry.trace``).
        meter_provider: Where metrics go; None for the global one (``opentelemetry.metrics``).

    Raises:
        ConfigError: the ``otel`` extra is not installed.

    Same as ``papayya.configure(otel=True)`` with these providers: the next ``map()`` (or worker) of
    this process builds its runtime with the exporter registered. Other processes (workers started
    elsewhere) need ``PAPAYYA_OTEL=1`` or ``otel = true`` in ``[tool.papayya]``.
    """
    require_otel()
    from papayya.runtime import configure

    with _lock:
        _providers.update(tracer=tracer_provider, meter=meter_provider)
    configure(otel=True)


def disable() -> None:
    """Stop exporting from this process (forget the providers given to :func:`enable`)."""
    from papayya.runtime import configure

    with _lock:
        _providers.update(tracer=None, meter=None)
    configure(otel=False)


def register(pm: pluggy.PluginManager) -> None:
    """Register the exporter plugin on ``pm`` (the runtime does this when the ``otel`` setting is on)."""
    require_otel()
    if pm.get_plugin(PLUGIN_NAME) is not None:
        return
    from papayya_otel.plugin import OtelPlugin

    with _lock:
        tracer_provider, meter_provider = _providers["tracer"], _providers["meter"]
    pm.register(OtelPlugin(tracer_provider, meter_provider), name=PLUGIN_NAME)
