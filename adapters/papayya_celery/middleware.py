"""``install(app)``: papayya as middleware of a Celery app, through Celery's own extension points.

- Every task of the app that runs a papayya agent (``@app.task`` over ``@agent``) gets a ``__call__``
  that runs the message through the core lifecycle (see ``worker.py``); a direct call
  (``enrich(item)``) still calls the function. Tasks are wrapped when the app is finalized and again
  when a worker starts (``worker_init``, before Celery builds its tracers), so tasks defined after
  ``install`` are covered.
- ``before_task_publish`` stamps the papayya tenant on messages published inside a papayya attempt or
  a ``papayya_celery.tenant(...)`` block, and the trace context of the publisher (``traceparent``, with
  OpenTelemetry installed) on papayya messages that do not carry one yet.
- ``worker_ready`` starts a reaper in the worker's main process (items whose worker died are marked
  ``stalled`` and published again) and, on a Redis broker, the unacked watch (``unacked.py``: messages
  a dead worker had prefetched go back to their queue; ``task_received`` tells it what this worker
  holds); ``worker_shutdown`` stops both. A pool process that stops gives back the budget it leased
  (``worker_process_shutdown``).

Signals are connected with ``weak=False`` once for every installed app and disconnected by the last
``uninstall``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import Celery, signals

from papayya.reaper import Reaper
from papayya.runtime import get_runtime
from papayya_celery import message as H
from papayya_celery import worker
from papayya_celery.unacked import UnackedWatch
from papayya_otel import propagation as trace_context

log = logging.getLogger("papayya.celery")

_lock = threading.RLock()
_apps: dict[int, Celery] = {}
_reapers: dict[int, Reaper] = {}
_watches: dict[int, UnackedWatch] = {}
_connected = False


def installed_apps() -> list[Celery]:
    """Apps with papayya installed, in install order."""
    with _lock:
        return list(_apps.values())


def is_installed(app: Celery) -> bool:
    return id(app) in _apps


def install(app: Celery) -> None:
    """Make every papayya agent task of ``app`` run its messages as accountable items (idempotent)."""
    global _connected
    with _lock:
        if id(app) in _apps:
            return
        _apps[id(app)] = app
        if not _connected:
            signals.before_task_publish.connect(_stamp, weak=False)
            signals.worker_init.connect(_on_worker_init, weak=False)
            signals.worker_ready.connect(_on_worker_ready, weak=False)
            signals.task_received.connect(_on_task_received, weak=False)
            signals.worker_shutdown.connect(_on_worker_shutdown, weak=False)
            signals.worker_process_shutdown.connect(_on_process_shutdown, weak=False)
            _connected = True
        # Tasks created from now on (including those declared before but not yet evaluated) inherit
        # papayya's methods; tasks that exist already get them on their own class (wrap_tasks).
        previous = app.Task
        _bases[id(app)] = previous
        app.Task = type("Task", (previous,), {**_METHODS, "__module__": __name__})
    app.on_after_finalize.connect(_on_finalize, weak=False)
    if app.finalized:
        wrap_tasks(app)


def uninstall(app: Celery) -> None:
    """Undo ``install(app)``: its tasks run as plain Celery tasks again and its reaper stops."""
    global _connected
    with _lock:
        if _apps.pop(id(app), None) is None:
            return
        reaper = _reapers.pop(id(app), None)
        watch = _watches.pop(id(app), None)
        app.Task = _bases.pop(id(app))
        if not _apps and _connected:
            signals.before_task_publish.disconnect(_stamp)
            signals.worker_init.disconnect(_on_worker_init)
            signals.worker_ready.disconnect(_on_worker_ready)
            signals.task_received.disconnect(_on_task_received)
            signals.worker_shutdown.disconnect(_on_worker_shutdown)
            signals.worker_process_shutdown.disconnect(_on_process_shutdown)
            _connected = False
    app.on_after_finalize.disconnect(_on_finalize)
    if reaper is not None:
        reaper.stop()
    if watch is not None:
        watch.stop()
    if app.finalized:
        for task in app.tasks.values():
            cls = type(task)
            for name, fn in _METHODS.items():
                if cls.__dict__.get(name) is fn:
                    delattr(cls, name)
    # Tasks created from papayya's base class keep it; its methods defer to Celery's when not installed.


def wrap_tasks(app: Celery) -> int:
    """Give each agent task of ``app`` papayya's methods (unless its class inherits them); return how
    many tasks run agents."""
    found = 0
    for task in list(app.tasks.values()):
        if worker.agent_of(task) is None:
            continue
        found += 1
        cls = type(task)
        if any(k.__dict__.get("__call__") is _call for k in cls.__mro__):
            continue
        if "__call__" in cls.__dict__:
            log.warning("task %s defines its own __call__; papayya runs its agent without it", task.name)
        for name, fn in _METHODS.items():
            setattr(cls, name, fn)
    return found


def _next(self: Any, name: str, fn: Any) -> Any:
    """Celery's own ``name`` of this task: the next definition after papayya's in the class's MRO."""
    mro = type(self).__mro__
    for i, klass in enumerate(mro):
        if klass.__dict__.get(name) is fn:
            for later in mro[i + 1 :]:
                if name in later.__dict__:
                    return later.__dict__[name].__get__(self, type(self))
    raise AttributeError(name)


def _call(self: Any, *args: Any, **kwargs: Any) -> Any:
    """The task's body: a message runs as an attempt of its item; a direct call calls the function."""
    agent = worker.agent_of(self)
    if agent is None or self.request.called_directly or not is_installed(self.app):
        return _next(self, "__call__", _call)(*args, **kwargs)
    return worker.run_message(self, agent, args, kwargs)


def _map(self: Any, it: Any, *args: Any, **kwargs: Any) -> Any:
    """``task.map(items, tenant=...)`` is the agent's ``map()``; ``task.map(it)`` is Celery's."""
    agent = worker.agent_of(self)
    if agent is not None and "tenant" in kwargs and is_installed(self.app):
        return agent.map(it, *args, **kwargs)
    return _next(self, "map", _map)(it, *args, **kwargs)


def _agent_method(name: str) -> Any:
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        agent = worker.agent_of(self)
        if agent is None:
            raise AttributeError(f"task {self.name} is not a papayya agent; it has no {name}()")
        return getattr(agent, name)(*args, **kwargs)

    method.__name__ = name
    method.__doc__ = f"The agent's ``{name}()``."
    return method


_METHODS: dict[str, Any] = {
    "__call__": _call,
    "map": _map,
    "submit": _agent_method("submit"),
    "resume": _agent_method("resume"),
    "replay": _agent_method("replay"),
}
_bases: dict[int, Any] = {}


# -- signal receivers ---------------------------------------------------------------------------------


def _stamp(sender: Any = None, headers: dict[str, Any] | None = None, **_: Any) -> None:
    if headers is None:
        return
    if not headers.get(H.TENANT):
        tenant = H.publishing_tenant()
        if tenant is None:
            return
        headers[H.TENANT] = tenant
    if not trace_context.fields() & headers.keys():  # a context the publisher set is kept
        trace_context.inject(headers)


def _on_finalize(sender: Any = None, **_: Any) -> None:
    if sender is not None and is_installed(sender):
        wrap_tasks(sender)


def _on_worker_init(sender: Any = None, **_: Any) -> None:
    app = getattr(sender, "app", None)
    if app is not None and is_installed(app):
        wrap_tasks(app)


def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    """Start the reaper in the worker's main process, re-driving this app's stalled items, and the
    unacked watch when the broker is Redis."""
    app = getattr(sender, "app", None)
    if app is None or not is_installed(app):
        return
    from papayya_celery.backend import CeleryBackend

    try:
        rt = get_runtime()
        backend = rt.backend
        if not isinstance(backend, CeleryBackend) or not backend.serves(app):
            rt.backend = CeleryBackend(app)  # this worker re-drives onto its own app
        with _lock:
            if id(app) not in _reapers:
                _reapers[id(app)] = Reaper(rt).start()
    except Exception:
        log.exception("could not start the papayya reaper in this worker; stalled items wait for another")
        return
    try:
        with _lock:
            if id(app) not in _watches:
                watch = UnackedWatch(app, rt).start()
                if watch is not None:
                    _watches[id(app)] = watch
    except Exception:
        log.exception(
            "could not start the papayya unacked watch in this worker; messages a dead worker had "
            "prefetched wait for Redis's visibility timeout"
        )


def _on_task_received(sender: Any = None, request: Any = None, **_: Any) -> None:
    """This worker took a message: the unacked watch keeps it marked alive until it is acknowledged."""
    watch = _watches.get(id(getattr(sender, "app", None)))
    if watch is not None and request is not None:
        watch.hold(request)


def _on_worker_shutdown(sender: Any = None, **_: Any) -> None:
    app = getattr(sender, "app", None)
    with _lock:
        reaper = _reapers.pop(id(app), None) if app is not None else None
        watch = _watches.pop(id(app), None) if app is not None else None
    if reaper is not None:
        reaper.stop()
    if watch is not None:
        watch.stop()
    worker.close_process()


def _on_process_shutdown(**_: Any) -> None:
    worker.close_process()
