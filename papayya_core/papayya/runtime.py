"""The process's papayya runtime: settings, the store and the plugin manager, built on first use.

``configure(...)`` sets explicit settings (they win over the environment) and drops the current
runtime so the next use builds a new one. Building one opens the store the settings point at
(:func:`papayya.config.store_location`), creating the embedded one if it does not exist yet.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from papayya.config import (
    Settings,
    clear_explicit,
    explicit_overrides,
    load_settings,
    set_explicit,
)
from papayya.errors import ConfigError
from papayya.store import Store

if TYPE_CHECKING:
    import pluggy

    from papayya.blobs import Blobs
    from papayya.budgets import Budgets
    from papayya.engine import Backend
    from papayya.plugins import Hooks
    from papayya.ratelimit import RateLimiter
    from papayya.runstate import ControlState

log = logging.getLogger("papayya")

NATIVE = "native"  # the built-in backend: always installed, so naming it needs no plugin to check

T = TypeVar("T")


def make_plugin_manager(*, load_entry_points: bool = True) -> pluggy.PluginManager:
    """:func:`papayya.plugins.make_plugin_manager`, imported when a runtime first needs its plugins
    (pluggy and the entry points are not read by a command that only reads the store)."""
    from papayya import plugins

    return plugins.make_plugin_manager(load_entry_points=load_entry_points)


class _built(Generic[T]):
    """A part of the runtime built on first use, once, under the runtime's lock (two threads asking
    at once get the same budgets, not one each)."""

    def __init__(self, build: Callable[[Runtime], T]) -> None:
        self.build = build

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, runtime: None, owner: type) -> _built[T]: ...
    @overload
    def __get__(self, runtime: Runtime, owner: type) -> T: ...
    def __get__(self, runtime: Runtime | None, owner: type) -> T | _built[T]:
        if runtime is None:
            return self
        with runtime._building:
            if self.name not in runtime.__dict__:
                runtime.__dict__[self.name] = self.build(runtime)
        value: T = runtime.__dict__[self.name]
        return value


class Runtime:
    """Settings + store + hooks for one process.

    Building one opens the store; the rest (plugins, the backend, budgets, rate limits, the blob
    store) is built on first use, so a command that only reads (``papayya runs list``) imports and
    starts none of it.
    """

    def __init__(self, settings: Settings, *, pm: pluggy.PluginManager | None = None) -> None:
        self.settings = settings
        self._building = threading.RLock()
        if pm is not None:
            self.__dict__["pm"] = self._with_otel(pm)
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        if settings.backend != NATIVE or pm is not None:
            self._backend_factories  # noqa: B018 - an unknown backend is one sentence before anything runs
        url = settings.database_url
        if url is None:
            from papayya.store.embedded import embedded_url

            url = embedded_url(settings.home)
        self.store = Store(
            url, pool_size=settings.pool_size, auto_migrate=settings.auto_migrate, tenant=settings.tenant
        )

    def _with_otel(self, pm: pluggy.PluginManager) -> pluggy.PluginManager:
        if self.settings.otel:  # enabled by the setting, not by an entry point: see papayya_otel
            import papayya_otel

            papayya_otel.register(pm)
        return pm

    @_built
    def pm(self) -> pluggy.PluginManager:
        """The plugin manager: built-ins and the ``papayya`` entry points."""
        return self._with_otel(make_plugin_manager())

    @_built
    def hooks(self) -> Hooks:
        """Typed calls into the plugins. Every attempt calls them before the user's function runs, so
        the watch for exceptions logged and swallowed there is installed here."""
        from papayya.context import install_log_watch
        from papayya.plugins import Hooks

        install_log_watch()
        return Hooks(self.pm)

    @_built
    def _backend_factories(self) -> dict[str, Callable[[], Backend]]:
        backends = self.hooks.register_backends()
        if self.settings.backend not in backends:
            raise ConfigError(
                f"Unknown backend {self.settings.backend!r} (PAPAYYA_BACKEND); installed: "
                f"{', '.join(sorted(backends))}; fix the name, or install the extra that provides it "
                "(e.g. pip install 'papayya[celery]')."
            )
        return backends

    @_built
    def _backends(self) -> dict[str, Backend]:
        return {}

    @_built
    def backend(self) -> Backend:
        """The configured backend (``PAPAYYA_BACKEND``)."""
        return self.backend_named(self.settings.backend)

    @_built
    def control(self) -> ControlState:
        """Run state and budget generations, read from the store (papayya.runstate)."""
        from papayya.runstate import ControlState

        return ControlState(self.store)

    @_built
    def budgets(self) -> Budgets:
        from papayya.budgets import Budgets

        return Budgets(self.store, self.control)

    @_built
    def ratelimits(self) -> RateLimiter:
        from papayya.ratelimit import RateLimiter

        return RateLimiter(self.store)

    @_built
    def blobs(self) -> Blobs:
        """Where large values go (papayya.blobs): PAPAYYA_BLOB_URL, local under ``home`` by default."""
        from papayya.blobs import Blobs

        return Blobs.from_env(self.settings.home)

    def backend_named(self, name: str) -> Backend:
        """The backend registered as ``name`` (a run resumed or replayed goes back to the backend it ran
        on); ConfigError when this process does not have it installed."""
        with self._building:
            if name not in self._backends:
                factory = self._backend_factories.get(name)
                if factory is None:
                    raise ConfigError(
                        f"This run ran on the {name!r} backend, which is not installed here; install "
                        f"'papayya[{name}]' (installed: {', '.join(sorted(self._backend_factories))})."
                    )
                try:
                    self._backends[name] = factory()
                except ImportError as exc:  # the backend's extra is not installed
                    raise ConfigError(f"The {name!r} backend cannot start here: {exc}.") from None
            return self._backends[name]

    def close(self) -> None:
        budgets = self.__dict__.get("budgets")
        if budgets is not None:
            try:
                budgets.close()
            except Exception:
                log.exception("could not return unspent budget leases; `papayya resume` reconciles them")
        self.store.close()


_lock = threading.Lock()
_runtime: Runtime | None = None


def current_runtime() -> Runtime | None:
    """The runtime this process has built, if any (without building one, so without opening a store)."""
    return _runtime


def get_runtime() -> Runtime:
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = Runtime(load_settings(**explicit_overrides()))
        return _runtime


def configure(**settings: Any) -> Settings:
    """Set papayya settings for this process (they win over ``PAPAYYA_*`` variables).

    Example: ``papayya.configure(database_url="postgresql://localhost/papayya", unknown_tenants="refuse")``.
    Raises ConfigError on an unknown or invalid setting; nothing changes then.
    """
    merged = {**explicit_overrides(), **settings}
    validated = load_settings(**merged)
    set_explicit(settings)
    reset()
    return validated


def reset(*, forget_configuration: bool = False) -> None:
    """Close the current runtime; the next use builds a new one (tests, re-configuration)."""
    global _runtime
    with _lock:
        old, _runtime = _runtime, None
    if old is not None:
        old.close()
    if forget_configuration:
        clear_explicit()


def _forget_after_fork() -> None:
    """In a forked child (a prefork pool process, say) the parent's connections are not ours: start
    afresh on first use, without closing what the parent still uses."""
    global _runtime, _lock
    _runtime = None
    _lock = threading.Lock()


atexit.register(reset)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
