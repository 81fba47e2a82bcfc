"""The ``celery`` backend: ``map()``, ``submit()``, ``papayya resume`` and ``papayya replay`` publish one
Celery message per item (ids in its headers, no payload) and read progress from the papayya store;
the reaper's stalled items are published again the same way (``redrive``).

The app is the one named by ``PAPAYYA_CELERY_APP=module:attribute``, or the one
``papayya_celery.install(app)`` was called on in this process, or else the generic app
(``papayya_celery.generic``, configured by ``PAPAYYA_CELERY_BROKER``). An agent the app has no task
for is published to the generic task ``papayya.run_item``, which runs the agent the run was started
with (``celery -A papayya_celery.generic worker`` runs it, as does any app given
``papayya_celery.generic.register(app)``).
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from celery import Celery

from papayya.engine import PublishingBackend
from papayya.errors import ConfigError
from papayya.execute import ItemRef
from papayya_celery import message as H
from papayya_celery.worker import BACKEND, agent_of
from papayya_otel import propagation as trace_context

GENERIC_TASK = "papayya.run_item"  # papayya_celery.generic.TASK (importing it makes the generic app)

if TYPE_CHECKING:
    from papayya.runtime import Runtime

log = logging.getLogger("papayya.celery")

APP_VARIABLE = "PAPAYYA_CELERY_APP"


def load_app(spec: str) -> Celery:
    """Import ``module:attribute`` and check it is a Celery app; ConfigError otherwise."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"{APP_VARIABLE}={spec!r} must look like module:attribute (e.g. proj.celery:app).")
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"{APP_VARIABLE}={spec!r}: cannot import {module_name!r} ({exc}); run where it is importable."
        ) from exc
    for part in attribute.split("."):
        found = getattr(found, part, None)
    if not isinstance(found, Celery):
        raise ConfigError(f"{APP_VARIABLE}={spec!r} is not a Celery app; name the Celery() object.")
    return found


class CeleryBackend(PublishingBackend):
    """Runs a recorded run's items on a Celery app's workers (see the module docstring)."""

    name = BACKEND

    def __init__(self, app: Celery | None = None) -> None:
        self._app = app
        self._tasks: dict[str, str] = {}

    def serves(self, app: Celery) -> bool:
        return self._app is None or self._app is app

    @property
    def app(self) -> Celery:
        if self._app is None:
            from papayya_celery.middleware import installed_apps

            apps = installed_apps()
            spec = os.environ.get(APP_VARIABLE)
            if spec:
                self._app = load_app(spec)
            elif apps:
                self._app = apps[-1]
            else:
                from papayya_celery.generic import app as generic_app

                self._app = generic_app
        return self._app

    def task_for(self, agent_name: str) -> Any:
        """The app's task that runs agent ``agent_name``, or None when it has none (the item is then
        published to the generic task)."""
        app = self.app
        name = self._tasks.get(agent_name)
        if name is None or name not in app.tasks:
            for task in app.tasks.values():
                agent = agent_of(task)
                if agent is not None:
                    self._tasks[agent.name] = task.name
            name = self._tasks.get(agent_name)
        return None if name is None else app.tasks[name]

    def publish(self, rt: Runtime, agent_name: str, refs: Sequence[ItemRef]) -> None:
        """Publish one message per item: its tenant and item id in the headers, its key as the argument;
        to the agent's own task, or to the generic task when the app has none for the agent."""
        task = self.task_for(agent_name)
        app = self.app
        with app.producer_or_acquire() as producer:
            for ref in refs:
                args = ({"id": ref.key},)
                headers = {H.TENANT: ref.tenant_id, H.ITEM: str(ref.item_id), H.KEY: ref.key}
                trace_context.inject(headers)  # the consumer's attempt is a child of the current span
                if task is not None:
                    task.apply_async(args, headers=headers, producer=producer)
                else:
                    app.send_task(GENERIC_TASK, args, headers=headers, producer=producer)
