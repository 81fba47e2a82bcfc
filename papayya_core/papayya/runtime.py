"""The process's papayya runtime: settings, the store and the plugin manager, built on first use.

``configure(...)`` sets explicit settings (they win over the environment) and drops the current
runtime so the next use builds a new one. Building one opens the store the settings point at
(:func:`papayya.config.store_location`), creating the embedded one if it does not exist yet.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import socket
import threading
from typing import TYPE_CHECKING, Any

import pluggy

from papayya.budgets import Budgets
from papayya.config import (
    Settings,
    clear_explicit,
    explicit_overrides,
    load_settings,
    set_explicit,
)
from papayya.errors import ConfigError
from papayya.plugins import Hooks, make_plugin_manager
from papayya.ratelimit import RateLimiter
from papayya.runstate import ControlState
from papayya.store import Store

if TYPE_CHECKING:
    from papayya.blobs import Blobs
    from papayya.engine import Backend

log = logging.getLogger("papayya")


class Runtime:
    """Settings + store + hooks for one process."""

    def __init__(self, settings: Settings, *, pm: pluggy.PluginManager | None = None) -> None:
        from papayya.context import install_log_watch

        self.settings = settings
        self.pm = pm or make_plugin_manager()
        if settings.otel:  # enabled by the setting, not by an entry point: see papayya_otel
            import papayya_otel

            papayya_otel.register(self.pm)
        self.hooks = Hooks(self.pm)
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        backends = self.hooks.register_backends()
        if settings.backend not in backends:
            raise ConfigError(
                f"Unknown backend {settings.backend!r} (PAPAYYA_BACKEND); installed: "
                f"{', '.join(sorted(backends))}; fix the name, or install the extra that provides it "
                "(e.g. pip install 'papayya[celery]')."
            )
        self._backend_factories = backends
        self._backends: dict[str, Backend] = {}
        self.backend: Backend = self.backend_named(settings.backend)
        url = settings.database_url
        if url is None:
            from papayya.store.embedded import embedded_url

            url = embedded_url(settings.home)
        self.store = Store(
            url, pool_size=settings.pool_size, auto_migrate=settings.auto_migrate, tenant=settings.tenant
        )
        self.control = ControlState(self.store)
        self.budgets = Budgets(self.store, self.control)
        self.ratelimits = RateLimiter(self.store)
        install_log_watch()

    @functools.cached_property
    def blobs(self) -> Blobs:
        """Where large values go (papayya.blobs): PAPAYYA_BLOB_URL, local under ``home`` by default."""
        from papayya.blobs import Blobs

        return Blobs.from_env(self.settings.home)

    def backend_named(self, name: str) -> Backend:
        """The backend registered as ``name`` (a run resumed or replayed goes back to the backend it ran
        on); ConfigError when this process does not have it installed."""
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
        try:
            self.budgets.close()
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
