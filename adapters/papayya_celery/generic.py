"""The generic Celery app: workers that run any papayya agent without declaring it as a task.

::

    celery -A papayya_celery.generic worker -P threads -c 8     # or: python -m papayya_celery worker

Its one task, ``papayya.run_item``, runs the item its headers name with the agent the item's run was
started with (``papayya.control.agent_of_run``: found by name, its module imported only where that
cannot start a batch again), through the same path as a team's own agent tasks (``worker.run_message``). The
``celery`` backend publishes to it whenever the app it publishes to has no task for the agent, and
uses this app when no app was installed in the process.

Settings (environment): ``PAPAYYA_CELERY_BROKER`` (default ``redis://127.0.0.1:6379/0``) and
``PAPAYYA_CELERY_QUEUE`` (default ``papayya``); the publishing process and the workers must agree.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from celery import Celery, Task

from papayya_celery import worker
from papayya_celery.middleware import install

BROKER_VARIABLE = "PAPAYYA_CELERY_BROKER"
QUEUE_VARIABLE = "PAPAYYA_CELERY_QUEUE"
DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
DEFAULT_QUEUE = "papayya"
TASK = "papayya.run_item"

_lock = threading.Lock()
_registered: dict[int, Celery] = {}


def run_item(self: Task, *args: Any, **kwargs: Any) -> Any:
    """The generic task's body: one attempt of the item its headers name, with its run's agent."""
    return worker.run_message(self, None, args, kwargs)


def register(app: Celery) -> None:
    """Add the generic task ``papayya.run_item`` to ``app`` (idempotent), so the app's own workers run
    any agent the ``celery`` backend publishes without a task of its own. ``install(app)`` as well."""
    with _lock:
        if id(app) in _registered:
            return
        app.task(
            name=TASK,
            bind=True,
            shared=False,
            acks_late=True,
            reject_on_worker_lost=True,
            ignore_result=True,
        )(run_item)
        _registered[id(app)] = app


def has_generic_task(app: Celery) -> bool:
    """Whether ``app`` has the generic task (``register(app)`` was called on it)."""
    return id(app) in _registered


def make_app() -> Celery:
    """A Celery app from the environment, with the generic task registered and papayya installed."""
    made = Celery(
        "papayya",
        broker=os.environ.get(BROKER_VARIABLE) or DEFAULT_BROKER,
        set_as_current=False,
    )
    made.conf.update(
        task_default_queue=os.environ.get(QUEUE_VARIABLE) or DEFAULT_QUEUE,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=4,
        broker_connection_retry_on_startup=True,
    )
    register(made)
    install(made)
    return made


app = make_app()

__all__ = ["TASK", "app", "has_generic_task", "make_app", "register", "run_item"]
