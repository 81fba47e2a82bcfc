"""Where the ``temporal`` backend finds Temporal: ``PAPAYYA_TEMPORAL_*`` environment variables.

=====================================  ================  ==============================================
variable                               default           meaning
=====================================  ================  ==============================================
``PAPAYYA_TEMPORAL_ADDRESS``           ``localhost:7233``  the Temporal frontend (host:port)
``PAPAYYA_TEMPORAL_NAMESPACE``         ``default``       the namespace
``PAPAYYA_TEMPORAL_TASK_QUEUE``        ``papayya``       the task queue of ``MapItems`` and its activities
``PAPAYYA_TEMPORAL_ACTIVITY_TIMEOUT``  ``3600``          seconds one attempt may run (start-to-close)
``PAPAYYA_TEMPORAL_HEARTBEAT_TIMEOUT`` ``30``            seconds without a heartbeat before Temporal
                                                         counts the worker as lost and retries
=====================================  ================  ==============================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from papayya.errors import ConfigError, PapayyaError


class TemporalUnavailable(PapayyaError):
    """The Temporal server cannot be reached."""


class TemporalError(PapayyaError):
    """A papayya workflow on Temporal failed (a worker is misconfigured, or the workflow was ended)."""


@dataclass(frozen=True)
class TemporalSettings:
    address: str = "localhost:7233"
    namespace: str = "default"
    task_queue: str = "papayya"
    activity_timeout: float = 3600.0
    heartbeat_timeout: float = 30.0

    @classmethod
    def from_env(cls) -> TemporalSettings:
        """Read the ``PAPAYYA_TEMPORAL_*`` variables; ConfigError (one sentence) on a bad value."""
        env = os.environ
        address = env.get("PAPAYYA_TEMPORAL_ADDRESS", "").strip() or cls.address
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(
                f"PAPAYYA_TEMPORAL_ADDRESS={address!r} is not host:port; set it like localhost:7233."
            )
        return cls(
            address=address,
            namespace=env.get("PAPAYYA_TEMPORAL_NAMESPACE", "").strip() or cls.namespace,
            task_queue=env.get("PAPAYYA_TEMPORAL_TASK_QUEUE", "").strip() or cls.task_queue,
            activity_timeout=_seconds("PAPAYYA_TEMPORAL_ACTIVITY_TIMEOUT", cls.activity_timeout),
            heartbeat_timeout=_seconds("PAPAYYA_TEMPORAL_HEARTBEAT_TIMEOUT", cls.heartbeat_timeout),
        )


def _seconds(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(f"{name}={raw!r} is not a positive number of seconds; set it like {default:g}.")
    return value


__all__ = ["TemporalError", "TemporalSettings", "TemporalUnavailable"]
