"""papayya_celery: accountable items on the Celery app a team already runs.

::

    from celery import Celery
    import papayya_celery
    from papayya import agent

    app = Celery("enrich", broker="redis://localhost:6379/0")
    papayya_celery.install(app)

    @app.task(acks_late=True)
    @agent
    def enrich(item):
        ...

Every execution of the task is an attempt of an item, run through papayya's one lifecycle: cost
attributed to tenant, run and item, outcome checks, journal (a retry or redelivery does not pay again
for recorded calls), budget gate (a paused tenant's messages are acked and their items parked as
``paused`` until ``papayya resume``) and failure clusters.

- ``enrich.map(items, tenant="t47")`` with ``PAPAYYA_BACKEND=celery`` records the run, publishes one
  message per item (ids in headers, no payload) and waits on the papayya store.
- ``enrich.delay(item)`` / ``apply_async`` from the team's own code, with a tenant
  (``headers=papayya_celery.headers("t47")`` or inside ``with papayya_celery.tenant("t47"):``), records
  the message as an item of the tenant's intake run for the day (key: ``papayya_key`` or the task id).
- An agent the team never declared as a task runs on the generic workers
  (``celery -A papayya_celery.generic worker -P threads -c 8``): the backend publishes its items to
  the generic task ``papayya.run_item``, which imports the agent the run was started with.
- The worker's main process runs the reaper: a worker that died leaves its item ``stalled``, and the
  item is published again.
- On Redis, the worker's main process also runs the unacked watch: messages a worker killed whole had
  prefetched go back to their queue after ``PAPAYYA_CELERY_UNACKED_SECONDS`` (default 120), not after
  Redis's visibility timeout.

Importing this package does not need Celery; ``install`` without it raises one clear error.
"""

from __future__ import annotations

from typing import Any

from papayya_celery.message import ITEM, KEY, TENANT, headers, tenant


def require_celery() -> None:
    """Raise ImportError with the fix when Celery is not installed."""
    try:
        import celery  # noqa: F401
    except ImportError:
        raise ImportError(
            "papayya_celery needs Celery; install it with: pip install 'papayya[celery]'"
        ) from None


def install(app: Any) -> None:
    """Make every papayya agent task of the Celery ``app`` run its messages as accountable items."""
    require_celery()
    from papayya_celery.middleware import install as _install

    _install(app)


def uninstall(app: Any) -> None:
    """Undo ``install(app)``: the app's tasks run as plain Celery tasks again."""
    require_celery()
    from papayya_celery.middleware import uninstall as _uninstall

    _uninstall(app)


def __getattr__(name: str) -> Any:
    if name == "CeleryBackend":
        require_celery()
        from papayya_celery.backend import CeleryBackend

        return CeleryBackend
    raise AttributeError(f"module 'papayya_celery' has no attribute {name!r}")


__all__ = [
    "ITEM",
    "KEY",
    "TENANT",
    "CeleryBackend",
    "headers",
    "install",
    "require_celery",
    "tenant",
    "uninstall",
]
