"""The plugin manager and a typed facade over it, so core code never calls ``pm.hook.*`` directly.

Built-in behaviour (inspectors, error classification) registers through the same manager and the
same path as third-party plugins from the ``papayya`` entry-point group.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import pluggy

from papayya import hookspecs

if TYPE_CHECKING:
    from papayya.context import AttemptContext
    from papayya.models import ErrorCategory, LLMCall, Reason

log = logging.getLogger("papayya.plugins")

ENTRY_POINT_GROUP = "papayya"


def make_plugin_manager(*, load_entry_points: bool = True) -> pluggy.PluginManager:
    from papayya import builtins

    pm = pluggy.PluginManager("papayya")
    pm.add_hookspecs(hookspecs)
    pm.register(builtins, name="papayya.builtins")
    if load_entry_points:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    pm.check_pending()
    return pm


class Hooks:
    """Typed, fault-isolated calls into the plugin manager."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm

    def _observe(self, name: str, **kwargs: Any) -> None:
        caller = getattr(self.pm.hook, name)
        for impl in reversed(caller.get_hookimpls()):
            try:
                impl.function(**{k: kwargs[k] for k in impl.argnames})
            except Exception:
                log.exception("plugin %s failed in %s; ignored", impl.plugin_name, name)

    def attempt_started(self, ctx: AttemptContext) -> None:
        self._observe("papayya_attempt_started", ctx=ctx)

    def attempt_finished(self, ctx: AttemptContext, status: str, reasons: list[Reason]) -> None:
        self._observe("papayya_attempt_finished", ctx=ctx, status=status, reasons=reasons)

    def outcome_recorded(self, ctx: AttemptContext, outcome: str, reasons: list[Reason]) -> None:
        self._observe("papayya_outcome_recorded", ctx=ctx, outcome=outcome, reasons=reasons)

    def llm_call_recorded(self, call: LLMCall) -> None:
        self._observe("papayya_llm_call_recorded", call=call)

    def llm_call_replayed(
        self, ctx: AttemptContext, step_key: str, provider: str, model: str | None, stop_reason: str | None
    ) -> None:
        self._observe(
            "papayya_llm_call_replayed",
            ctx=ctx,
            step_key=step_key,
            provider=provider,
            model=model,
            stop_reason=stop_reason,
        )

    def inspect_output(self, ctx: AttemptContext, output: Any) -> list[Reason]:
        found: list[Reason] = []
        for impl in reversed(self.pm.hook.papayya_inspect_output.get_hookimpls()):
            try:
                reasons = impl.function(ctx=ctx, output=output)
            except Exception:
                log.exception("inspector %s failed; treated as finding nothing", impl.plugin_name)
                continue
            found.extend(cast("list[Reason]", reasons or []))
        return found

    def classify_error(self, exc: BaseException) -> tuple[ErrorCategory, bool]:
        answer = self.pm.hook.papayya_classify_error(exc=exc)
        if answer is None:  # builtins always answer; a None means a broken plugin chain
            from papayya.models import ErrorCategory

            return ErrorCategory.USER, False
        category, retryable = answer
        return category, bool(retryable)

    def register_backends(self) -> dict[str, Callable[..., Any]]:
        found: dict[str, Callable[..., Any]] = {}

        def register(name: str, factory: Callable[..., Any]) -> None:
            found[name] = factory

        self.pm.hook.papayya_register_backends(register=register)
        return found
