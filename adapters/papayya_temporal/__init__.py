"""papayya on Temporal: accountable items inside Temporal activities.

One interceptor (client and worker) carries the tenant and item ids in a ``papayya`` header from the
client through workflows to each activity; an activity that is an ``@agent`` then runs each execution
as an attempt of its item through papayya's lifecycle (accounting, outcomes, journal, budget gate,
clusters). ``MapItems`` is the ready workflow that runs a run's items with bounded concurrency and a
pause gate; the ``temporal`` backend (``PAPAYYA_BACKEND=temporal``) starts it for ``map()``,
``submit()``, ``papayya resume`` and replays. ``papayya.run_item`` (``run_any_item``) is the generic
activity that runs any agent from its run's record, and ``python -m papayya_temporal worker`` a ready
worker with it, ``MapItems`` and the interceptor.

Names are loaded on first use, so a workflow sandbox importing ``papayya_temporal.workflow`` never
imports papayya's core.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from papayya_temporal.activity import GENERIC_ACTIVITY, run_any_item
    from papayya_temporal.backend import TemporalBackend, activity_for, activity_name, connect, workflow_id
    from papayya_temporal.config import TemporalError, TemporalSettings, TemporalUnavailable
    from papayya_temporal.headers import HEADER, Stamp, current_stamp, stamped
    from papayya_temporal.interceptor import Interceptor
    from papayya_temporal.workflow import MapItems, MapJob

_WHERE = {
    # the interceptor and the stamp it carries
    "Interceptor": "interceptor",
    "HEADER": "headers",
    "Stamp": "headers",
    "current_stamp": "headers",
    "stamped": "headers",
    # the generic activity: runs any agent from its run's record
    "GENERIC_ACTIVITY": "activity",
    "run_any_item": "activity",
    # the ready workflow
    "MapItems": "workflow",
    "MapJob": "workflow",
    # the backend
    "TemporalBackend": "backend",
    "activity_for": "backend",
    "activity_name": "backend",
    "connect": "backend",
    "workflow_id": "backend",
    "TemporalSettings": "config",
    "TemporalError": "config",
    "TemporalUnavailable": "config",
}

__all__ = [
    "GENERIC_ACTIVITY",
    "HEADER",
    "Interceptor",
    "MapItems",
    "MapJob",
    "Stamp",
    "TemporalBackend",
    "TemporalError",
    "TemporalSettings",
    "TemporalUnavailable",
    "activity_for",
    "activity_name",
    "connect",
    "current_stamp",
    "run_any_item",
    "stamped",
    "workflow_id",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'papayya_temporal' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"papayya_temporal.{module}"), name)
    globals()[name] = value
    return value
