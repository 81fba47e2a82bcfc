"""The one item lifecycle. Every backend runs an attempt through ``begin`` -> call -> ``conclude``.

1. ``begin`` claims the queued item for a new attempt (status ``running``, a lease from the database
   clock and a fencing token) and loads its journal;
2. the caller sets the ``run`` context and calls the user's function (sync or async, its business);
3. ``conclude`` classifies what came back (output schema, inspectors, checks, signals; or the
   exception: category, retryable, fingerprint) and writes the attempt and the item's new status in
   one statement fenced by the token. A stale token means someone else owns the item now: the
   result is discarded.

Nothing about accounting, outcome checks or journaling lives anywhere else.
"""

from __future__ import annotations

import logging
import random
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from uuid import UUID

from papayya import fingerprint
from papayya.context import AttemptContext
from papayya.errors import AttemptAbandoned, Paused, StaleLease
from papayya.models import ErrorCategory, ErrorInfo, Item, ItemStatus, Reason

if TYPE_CHECKING:
    from papayya.agent import Agent
    from papayya.runtime import Runtime

log = logging.getLogger("papayya.execute")


@dataclass(frozen=True, slots=True)
class ItemRef:
    """Which item to run: its id, its user key, its run and tenant."""

    item_id: UUID
    key: str
    run_id: UUID
    tenant_id: str


@dataclass(frozen=True, slots=True)
class Concluded:
    """What an attempt ended as. ``retry_in`` is set when the item went back to ``queued``."""

    status: str
    terminal: bool
    retry_in: float | None = None
    cost_usd: Decimal = Decimal(0)
    reasons: tuple[Reason, ...] = ()
    discarded: bool = False


SKIPPED = Concluded(status="skipped", terminal=False, discarded=True)


def begin(
    rt: Runtime,
    agent: Agent,
    ref: ItemRef,
    *,
    backend: str,
    price_overrides: dict[tuple[str, str], dict[str, Decimal | None]],
    budget_period: str = "month",
) -> AttemptContext | None:
    """Claim ``ref`` for a new attempt; None when it is not queued any more."""
    attempt_id = uuid.uuid4()
    claim = rt.store.attempt_begin(
        item_id=ref.item_id,
        tenant_id=ref.tenant_id,
        attempt_id=attempt_id,
        backend=backend,
        worker=rt.worker_id,
        lease_seconds=rt.settings.lease_seconds,
    )
    if claim is None:
        return None
    ctx = AttemptContext(
        runtime=rt,
        agent=agent,
        tenant_id=ref.tenant_id,
        run_id=ref.run_id,
        item_id=ref.item_id,
        item=Item(ref.key, claim.input),
        attempt_id=attempt_id,
        attempt=claim.number,
        lease_token=claim.token,
        failures=claim.failures,
        from_journal=claim.from_journal,
        backend=backend,
        journal=claim.journal,
        price_overrides=price_overrides,
        accounts=rt.budgets.accounts(ref.tenant_id, ref.run_id, budget_period),
    )
    rt.hooks.attempt_started(ctx)
    return ctx


def backoff(policy_base: float, policy_max: float, attempt: int) -> float:
    """Exponential backoff with jitter: about base * 2^(attempt-1), capped at max."""
    if policy_base <= 0:
        return 0.0
    delay: float = min(policy_max, policy_base * 2 ** (attempt - 1))
    return delay * random.uniform(0.5, 1.0)


def conclude(
    ctx: AttemptContext,
    *,
    output: Any = None,
    error: BaseException | None = None,
) -> Concluded:
    """Classify the attempt's result and write it. Never raises for the user's errors."""
    if ctx.abandoned or isinstance(error, AttemptAbandoned):
        return Concluded(status="abandoned", terminal=False, discarded=True)
    if isinstance(error, Paused):
        return pause(ctx, error)
    agent = ctx.agent
    if error is None:
        recorded, reasons = _classify_output(ctx, output)
        status = ItemStatus.DEGRADED if reasons else ItemStatus.SUCCEEDED
        fp = fingerprint.degradation(reasons) if reasons else None
        return _write(
            ctx,
            item_status=status,
            attempt_status=status,
            terminal=True,
            reasons=reasons,
            output=recorded,
            error=None,
            fingerprint=fp,
        )

    category, retryable = ctx.runtime.hooks.classify_error(error)
    fp, message, frame = fingerprint.failure(error, category)
    info = ErrorInfo(
        type=type(error).__qualname__,
        message=str(error)[:2000],
        pattern=message,
        category=category,
        frame=frame,
        traceback=fingerprint.format_tb(error),
        retryable=retryable,
    )
    retry_in = None
    # Only failed attempts use up retries: an attempt stopped by a pause or a stopping process does not.
    if retryable and ctx.failures + 1 < agent.max_attempts:
        retry_in = backoff(agent.backoff, agent.backoff_max, ctx.attempt)
        log.info(
            "item %s attempt %d failed (%s), retrying in %.1fs",
            ctx.item.id,
            ctx.attempt,
            type(error).__name__,
            retry_in,
        )
    return _write(
        ctx,
        item_status=ItemStatus.FAILED if retry_in is None else ItemStatus.QUEUED,
        attempt_status=ItemStatus.FAILED,
        terminal=retry_in is None,
        reasons=[],
        output=None,
        error=info.model_dump(mode="json"),
        fingerprint=fp,
        retry_in=retry_in,
    )


def pause(ctx: AttemptContext, signal: Paused) -> Concluded:
    """Stop the item here as ``paused`` (journal intact) and pause its run, or for a tenant budget every
    running run of the tenant. ``papayya resume`` puts paused items back in the queue."""
    result = _write(
        ctx,
        item_status=ItemStatus.PAUSED,
        attempt_status=ItemStatus.PAUSED,
        terminal=False,
        reasons=[],
        output=None,
        error=None,
        fingerprint=None,
    )
    if signal.kind != "paused":
        scope_run = None if signal.kind == "budget:tenant" else ctx.run_id
        paused = ctx.runtime.store.runs_pause(ctx.tenant_id, scope_run, f"{signal.kind}: {signal.reason}")
        if paused:
            log.warning("paused %d run(s) of tenant %r: %s", len(paused), ctx.tenant_id, signal.reason)
    return result


def release(ctx: AttemptContext) -> Concluded:
    """Give the item back (``queued``) without an outcome: the process is stopping mid-attempt."""
    return _write(
        ctx,
        item_status=ItemStatus.QUEUED,
        attempt_status=ItemStatus.CANCELLED,
        terminal=False,
        reasons=[],
        output=None,
        error=None,
        fingerprint=None,
    )


def abandon_for_timeout(ctx: AttemptContext, timeout: float) -> Concluded:
    """The attempt overran ``timeout``: fail it (retry per policy) and void whatever it returns."""
    try:
        raise TimeoutError(f"agent {ctx.agent.name} did not finish within {timeout:g}s")
    except TimeoutError as exc:
        result = conclude(ctx, error=exc)
    ctx.abandoned = True
    return result


def _classify_output(ctx: AttemptContext, output: Any) -> tuple[Any, list[Reason]]:
    from papayya.outcomes import classify

    return classify(ctx, output)


def _write(
    ctx: AttemptContext,
    *,
    item_status: str,
    attempt_status: str,
    terminal: bool,
    reasons: list[Reason],
    output: Any,
    error: dict[str, Any] | None,
    fingerprint: str | None,
    retry_in: float | None = None,
) -> Concluded:
    reason_dicts = [r.model_dump(mode="json") for r in reasons]
    label = None
    if fingerprint is not None:
        if reasons:
            label = "; ".join(sorted({r.label() for r in reasons}))
        elif error is not None:
            where = f" in {error['frame']}" if error.get("frame") else ""
            label = f"{error['type']} {error.get('pattern', '')}{where} ({error['category']})"
    try:
        ctx.runtime.store.attempt_finish(
            item_id=ctx.item_id,
            tenant_id=ctx.tenant_id,
            attempt_id=ctx.attempt_id,
            lease_token=ctx.lease_token,
            item_status=item_status,
            attempt_status=attempt_status,
            terminal=terminal,
            reasons=reason_dicts,
            output=output,
            error=error,
            fingerprint=fingerprint,
            cluster_label=label,
        )
    except StaleLease:
        log.warning("item %s: attempt %d lost its lease; its result was discarded", ctx.item.id, ctx.attempt)
        return Concluded(status="stale", terminal=False, discarded=True)
    hooks = ctx.runtime.hooks
    hooks.attempt_finished(ctx, attempt_status, reasons)
    if terminal:
        hooks.outcome_recorded(ctx, item_status, reasons)
    return Concluded(
        status=item_status,
        terminal=terminal,
        retry_in=retry_in,
        cost_usd=ctx.cost_usd,
        reasons=tuple(reasons),
    )


__all__ = [
    "SKIPPED",
    "Concluded",
    "ErrorCategory",
    "ItemRef",
    "abandon_for_timeout",
    "begin",
    "conclude",
    "pause",
    "release",
]
