"""Hook specifications: every extension point of papayya, prefixed ``papayya_``.

Each docstring says when the hook fires. *Observation* hooks return nothing; a plugin that raises
in one is logged and skipped, it never breaks the item. *Decision* hooks are ``firstresult``: the
first non-None answer wins, and built-ins answer last.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from papayya.context import AttemptContext
    from papayya.models import ErrorCategory, LLMCall, Reason

hookspec = pluggy.HookspecMarker("papayya")
hookimpl = pluggy.HookimplMarker("papayya")


@hookspec
def papayya_register_backends(register: Any) -> None:
    """Fires when a runtime starts. Call ``register(name, factory)`` for each backend you provide;
    ``factory()`` returns an object with the ``papayya.engine.Backend`` protocol. The backend named by
    the ``backend`` setting runs ``map()``."""


@hookspec
def papayya_attempt_started(ctx: AttemptContext) -> None:
    """Fires after an attempt claimed its item, before the user's function is called. Observation."""


@hookspec
def papayya_attempt_finished(ctx: AttemptContext, status: str, reasons: list[Reason]) -> None:
    """Fires after an attempt's result is durably written (any status, retries included). Observation."""


@hookspec
def papayya_outcome_recorded(ctx: AttemptContext, outcome: str, reasons: list[Reason]) -> None:
    """Fires when an item reaches its terminal outcome, after the write commits. Observation."""


@hookspec
def papayya_llm_call_recorded(call: LLMCall) -> None:
    """Fires after an LLM call is written to the ledger: once per call the provider answered (and
    billed), never for a call answered from the journal. Observation."""


@hookspec
def papayya_llm_call_replayed(
    ctx: AttemptContext, step_key: str, provider: str, model: str | None, stop_reason: str | None
) -> None:
    """Fires when a journaled LLM call is answered from the journal instead of the provider (a retry, a
    resume, lease recovery, a from-journal replay): nothing was paid, no ledger row was written, and
    the item keeps the cost (and ``cost_unknown``) of the row written when it was paid. What the
    response says (its stop reason) has been re-derived for the item's outcome. Observation."""


@hookspec
def papayya_inspect_output(ctx: AttemptContext, output: Any) -> list[Reason] | None:
    """Fires after the user's function returned. Return degradation reasons for ``output``.

    Every implementation runs and the reasons are combined; one that raises is logged and treated as
    finding nothing.
    """


@hookspec(firstresult=True)
def papayya_classify_error(exc: BaseException) -> tuple[ErrorCategory, bool] | None:
    """Decision: whose fault ``exc`` is and whether retrying may help, as (category, retryable)."""
