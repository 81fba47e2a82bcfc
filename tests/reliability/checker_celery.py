"""The invariant checker's Celery app: a team's own app with papayya installed and the checker's agent as
its task (``@app.task`` above ``@agent``, as docs/adapters/celery.md shows), for real ``celery worker``
processes::

    celery -A tests.reliability.checker_celery worker -P prefork -c 8

It reads what the checker varies per seed from the environment: ``CHECKER_CELERY_BROKER`` (a Redis
database or a RabbitMQ vhost), ``CHECKER_CELERY_QUEUE`` (the seed's own queue) and ``CHECKER_CELERY_ACK``
(``late``: ``acks_late`` with ``reject_on_worker_lost``, the documented setting for workers that may die;
``early``: Celery's default, the message acknowledged as its task starts). The agent itself, its name
and its provider come from ``tests.reliability.checker_agent`` (``CHECKER_AGENT``, ``CHECKER_SEED``,
``CHECKER_FAKE_URL``).
"""

from __future__ import annotations

import os

from celery import Celery

import papayya_celery
from tests.reliability import checker_agent

TASK = "checker.enrich"
LATE = os.environ.get("CHECKER_CELERY_ACK", "late") == "late"

app = Celery("checker", broker=os.environ.get("CHECKER_CELERY_BROKER", "redis://127.0.0.1:6379/9"))
app.conf.update(
    task_default_queue=os.environ.get("CHECKER_CELERY_QUEUE", "checker"),
    task_acks_late=LATE,
    task_reject_on_worker_lost=LATE,
    task_ignore_result=True,
    worker_enable_remote_control=False,  # several workers of one name share no pidbox queue
    broker_connection_retry_on_startup=True,
)
papayya_celery.install(app)

enrich = app.task(name=TASK, shared=False, acks_late=LATE, reject_on_worker_lost=LATE)(checker_agent.enrich)
