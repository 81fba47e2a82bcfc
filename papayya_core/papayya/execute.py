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

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from uuid import UUID

from papayya import fingerprint
from papayya.context import AttemptContext, current
from papayya.errors import AttemptAbandoned, Paused, StoreUnavailable, Waiting
from papayya.fingerprint import degradation_label, failure_label
from papayya.models import ErrorCategory, ErrorInfo, Item, ItemStatus, Reason
from papayya.store import Finish

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
    """Claim ``ref`` for a new attempt; None when it cannot run now (``refusal`` says why)."""
    attempt_id = uuid.uuid4()
    asked = time.monotonic()
    claim = rt.store.attempt_begin(
        item_id=ref.item_id,
        tenant_id=ref.tenant_id,
        run_id=ref.run_id,
        attempt_id=attempt_id,
        backend=backend,
        worker=rt.worker_id,
        lease_seconds=rt.settings.lease_seconds,
        max_stalls=rt.settings.max_stalls,
    )
    if claim is None:
        return None
    # The claim found the run running at this generation: whatever this process saw before is older
    # (a worker that saw the run paused runs it again once it is resumed).
    rt.control.observe_run(ref.run_id, "running", claim.run_gen)
    ctx = context(
        rt,
        agent,
        ref,
        attempt_id=attempt_id,
        number=claim.number,
        token=claim.token,
        input=claim.input,
        journal=claim.journal,
        failures=claim.failures,
        from_journal=claim.from_journal,
        backend=backend,
        price_overrides=price_overrides,
        budget_period=budget_period,
    )
    ctx.lease_until = asked + rt.settings.lease_seconds
    return ctx


def heartbeat(rt: Runtime, held: Sequence[AttemptContext], lease_seconds: float) -> set[UUID]:
    """The one lease keeper of every worker (native, Celery, SQS, Temporal): extend the leases of the
    attempts ``held`` and act on the answer. An attempt whose lease was extended may pay for calls
    until ``lease_seconds`` after the heartbeat was *sent*; one the store no longer lists is not its
    worker's any more (the reaper gave the item to someone else), so it stops before its next paid
    call, unless its result was written meanwhile (it concluded; nothing is flagged or reported).
    Returns the item ids still held. StoreUnavailable propagates (nothing is extended then, and each
    attempt's own deadline stops it if the store stays away past its lease)."""
    if not held:
        return set()
    sent = time.monotonic()
    kept = rt.store.leases_extend([(c.item_id, c.lease_token) for c in held], lease_seconds)
    missing = [c for c in held if c.item_id not in kept and not c.abandoned]
    # An attempt whose result was written while the heartbeat was on its way is not held any more
    # because it is done, not because it was lost: asked apart, so that it is neither flagged nor
    # reported (a worker concluding hundreds of items a second meets this every few thousand items).
    done = rt.store.attempts_concluded([(c.item_id, c.lease_token) for c in missing]) if missing else set()
    for ctx in held:
        if ctx.item_id in kept:
            ctx.lease_until = sent + lease_seconds
        elif ctx.item_id in done:
            continue
        elif not ctx.abandoned:
            ctx.abandoned = True
            log.warning(
                "item %s: attempt %d lost its lease; it stops before its next paid call",
                ctx.item.id,
                ctx.attempt,
            )
    return kept


def context(
    rt: Runtime,
    agent: Agent,
    ref: ItemRef,
    *,
    attempt_id: UUID,
    number: int,
    token: int,
    input: Any,
    journal: dict[str, Any],
    failures: int,
    from_journal: bool,
    backend: str,
    price_overrides: dict[tuple[str, str], dict[str, Decimal | None]],
    budget_period: str = "month",
    llm_mode: str = "live",
    started: bool = True,
) -> AttemptContext:
    """The context of an attempt just claimed (by ``begin``, or by a worker's batched claim).
    ``started``: the attempt begins now (the started hook fires); a native worker's claim passes
    False and calls :func:`started` when the attempt is recorded as begun."""
    ctx = AttemptContext(
        runtime=rt,
        agent=agent,
        tenant_id=ref.tenant_id,
        run_id=ref.run_id,
        item_id=ref.item_id,
        item=Item(ref.key, rt.blobs.expand(ref.tenant_id, input)),
        attempt_id=attempt_id,
        attempt=number,
        lease_token=token,
        failures=failures,
        from_journal=from_journal,
        backend=backend,
        journal=journal,
        price_overrides=price_overrides,
        accounts=rt.budgets.accounts(ref.tenant_id, ref.run_id, budget_period),
        llm_mode=llm_mode,
    )
    ctx.begun = False
    if started:
        mark_started(ctx)
    return ctx


def mark_started(ctx: AttemptContext) -> None:
    """The attempt began: from now on hooks see it (started, then finished)."""
    ctx.begun = True
    ctx.runtime.hooks.attempt_started(ctx)


def backoff(policy_base: float, policy_max: float, attempt: int) -> float:
    """Exponential backoff with jitter: about base * 2^(attempt-1), capped at max."""
    if policy_base <= 0:
        return 0.0
    delay: float = min(policy_max, policy_base * 2 ** (attempt - 1))
    return delay * random.uniform(0.5, 1.0)


def invoke(ctx: AttemptContext) -> tuple[Any, BaseException | None]:
    """Call the user's (sync) function on the item with the ``run`` context set: (output, None) or
    (None, the exception). KeyboardInterrupt and SystemExit propagate (the caller releases the item)."""
    token = current.set(ctx)
    ctx.capturing = True
    try:
        return ctx.agent.fn(ctx.item), None
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        return None, exc
    finally:
        ctx.capturing = False
        current.reset(token)


async def ainvoke(ctx: AttemptContext, timeout: float | None = None) -> tuple[Any, BaseException | None]:
    """``invoke`` for an ``async def`` agent, with an optional timeout (TimeoutError on expiry).
    Cancellation propagates (the caller releases the item)."""
    token = current.set(ctx)
    ctx.capturing = True
    try:
        coro = ctx.agent.fn(ctx.item)
        return (await asyncio.wait_for(coro, timeout) if timeout else await coro), None
    except (KeyboardInterrupt, SystemExit, asyncio.CancelledError):
        raise
    except BaseException as exc:
        return None, exc
    finally:
        ctx.capturing = False
        current.reset(token)


def refusal(rt: Runtime, ref: ItemRef) -> str:
    """Why ``begin`` did not claim ``ref``, for a backend deciding what to do with its message:

    - ``"unknown"``: no such item for that tenant (a forged or mistaken tenant/item: refuse it);
    - ``"done"``: it already has an outcome (a duplicate delivery: drop it);
    - ``"running"``: another attempt holds a live lease on it (a duplicate delivery), or it is
      claimable again (a resume requeued it meanwhile): look again once the lease could have expired;
    - ``"paused"``: its run is paused; the item is now ``paused`` and ``papayya resume`` re-drives it;
    - ``"lost"``: it lost its worker ``max_stalls`` times; the reaper fails it (drop the message);
    - ``"stopped"``: its run was cancelled or completed.
    """
    row = rt.store.fetch_one(
        "item_park", {"item_id": ref.item_id, "tenant_id": ref.tenant_id, "run_id": ref.run_id}
    )
    if row is None:
        return "unknown"
    status, run_status = row["status"], row["run_status"]
    if status in ("succeeded", "degraded", "failed", "cancelled"):
        return "done"
    if run_status == "paused":
        return "paused"  # (an item left paused in a running run is claimable: "running" below)
    if run_status != "running":
        return "stopped"
    if status == "running" and not row["lease_live"]:
        return "lost"  # expired, yet not claimable: it used up its stalls
    return "running"


@dataclass(frozen=True, slots=True)
class Judged:
    """An attempt's verdict, ready to write: what ``settle`` writes (alone or in a batch)."""

    ctx: AttemptContext
    finish: Finish
    reasons: tuple[Reason, ...] = ()
    pause: Paused | None = None


def conclude(
    ctx: AttemptContext,
    *,
    output: Any = None,
    error: BaseException | None = None,
) -> Concluded:
    """Classify the attempt's result and write it. Never raises for the user's errors."""
    judged = judge(ctx, output=output, error=error)
    if judged is None:
        return Concluded(status="abandoned", terminal=False, discarded=True)
    return settle([judged])[0]


def judge(ctx: AttemptContext, *, output: Any = None, error: BaseException | None = None) -> Judged | None:
    """Classify what the user's function returned (or raised): output schema, inspectors, checks and
    signals, or the error's category, retry and fingerprint. None for an attempt the watchdog already
    concluded (its result is void)."""
    if ctx.abandoned or isinstance(error, AttemptAbandoned):
        return None
    if isinstance(error, Paused):
        return Judged(ctx, _finish(ctx, ItemStatus.PAUSED, ItemStatus.PAUSED, terminal=False), pause=error)
    if isinstance(error, Waiting):  # batch mode: the call is on its way in a provider batch
        return Judged(ctx, _finish(ctx, ItemStatus.WAITING, ItemStatus.WAITING, terminal=False))
    agent = ctx.agent
    if error is None:
        recorded, reasons = _classify_output(ctx, output)
        status = ItemStatus.DEGRADED if reasons else ItemStatus.SUCCEEDED
        fp = fingerprint.degradation(reasons) if reasons else None
        finish = _finish(ctx, status, status, terminal=True, reasons=reasons, output=recorded, fingerprint=fp)
        return Judged(ctx, finish, tuple(reasons))

    if isinstance(error, StoreUnavailable):
        # papayya lost its store mid-attempt (a journal or ledger write failed): not the item's doing,
        # so it is not a failed attempt. The item goes back to the queue (attempt kept as stalled)
        # and runs again once the store answers; what was recorded before the outage is reused.
        delay = backoff(1.0, 30.0, ctx.attempt)
        log.warning("item %s: the store went away mid-attempt; it runs again in %.1fs", ctx.item.id, delay)
        return Judged(ctx, _finish(ctx, ItemStatus.QUEUED, "stalled", terminal=False, retry_in=delay))
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
    finish = _finish(
        ctx,
        ItemStatus.FAILED if retry_in is None else ItemStatus.QUEUED,
        ItemStatus.FAILED,
        terminal=retry_in is None,
        error=info.model_dump(mode="json"),
        fingerprint=fp,
        retry_in=retry_in,
    )
    return Judged(ctx, finish)


def settle(judged: Sequence[Judged]) -> list[Concluded]:
    """Write verdicts in one statement (all of one runtime), then run the hooks of those that applied;
    a verdict whose lease token went stale is discarded (someone else holds that item now)."""
    if not judged:
        return []
    rt = judged[0].ctx.runtime
    applied = rt.store.attempts_finish([j.finish for j in judged])
    results = []
    for j in judged:
        ctx, f = j.ctx, j.finish
        if f.item_id not in applied:
            log.warning(
                "item %s: attempt %d lost its lease; its result was discarded", ctx.item.id, ctx.attempt
            )
            results.append(Concluded(status="stale", terminal=False, discarded=True))
            continue
        if j.pause is not None and j.pause.kind != "paused":
            scope_run = None if j.pause.kind == "budget:tenant" else ctx.run_id
            reason = f"{j.pause.kind}: {j.pause.reason}"
            paused = rt.store.runs_pause(ctx.tenant_id, scope_run, reason)
            rt.control.paused(paused)
            if paused:
                log.warning("paused %d run(s) of tenant %r: %s", len(paused), ctx.tenant_id, j.pause.reason)
        if ctx.begun:  # (an item given back from a worker's buffer never began)
            rt.hooks.attempt_finished(ctx, f.attempt_status, list(j.reasons))
        if f.terminal:
            rt.hooks.outcome_recorded(ctx, f.item_status, list(j.reasons))
        results.append(
            Concluded(
                status=f.item_status,
                terminal=f.terminal,
                retry_in=f.retry_in,
                cost_usd=ctx.cost_usd,
                reasons=j.reasons,
            )
        )
    return results


def pause(ctx: AttemptContext, signal: Paused) -> Concluded:
    """Stop the item here as ``paused`` (journal intact) and pause its run, or for a tenant budget every
    running run of the tenant. ``papayya resume`` puts paused items back in the queue."""
    return conclude(ctx, error=signal)


def release(ctx: AttemptContext) -> Concluded:
    """Give the item back (``queued``) without an outcome: the process is stopping mid-attempt, or
    its queue cancelled the attempt. Its function may still run (a thread cannot be stopped): it stops
    before its next paid call, and a call already on the wire is waited for (while the lease holds)
    so that its record is in the journal the next attempt reads, instead of being paid again."""
    ctx.abandoned = True
    await_paid_calls(ctx)
    return settle([Judged(ctx, release_finish(ctx))])[0]


def await_paid_calls(ctx: AttemptContext) -> None:
    """Before an abandoned attempt's item goes back: wait, while its lease holds (at most
    ``RELEASE_WAIT``), for the paid calls it has on the wire to be recorded, so that the next attempt
    finds them in the journal instead of paying for them again."""
    if not ctx.paying:
        return
    left = (ctx.lease_until - time.monotonic()) if ctx.lease_until is not None else RELEASE_WAIT
    if not ctx.settle_paying(min(left, RELEASE_WAIT)):
        log.warning(
            "item %s: given back with a paid call unrecorded; the next attempt may pay for it again",
            ctx.item.id,
        )


RELEASE_WAIT = 60.0  # seconds at most a release waits for a paid call on the wire to be recorded


def release_finish(ctx: AttemptContext) -> Finish:
    """The write that gives an item back to the queue; its attempt is kept as ``cancelled``."""
    return _finish(ctx, ItemStatus.QUEUED, ItemStatus.CANCELLED, terminal=False)


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


def _finish(
    ctx: AttemptContext,
    item_status: str,
    attempt_status: str,
    *,
    terminal: bool,
    reasons: Sequence[Reason] = (),
    output: Any = None,
    error: dict[str, Any] | None = None,
    fingerprint: str | None = None,
    retry_in: float | None = None,
) -> Finish:
    label = None
    if fingerprint is not None:
        if reasons:
            label = degradation_label(list(reasons))
        elif error is not None:
            label = failure_label(
                error["type"], error.get("pattern", ""), error.get("frame"), error["category"]
            )
    return Finish(
        item_id=ctx.item_id,
        tenant_id=ctx.tenant_id,
        attempt_id=ctx.attempt_id,
        lease_token=ctx.lease_token,
        item_status=item_status,
        attempt_status=attempt_status,
        terminal=terminal,
        reasons=[r.model_dump(mode="json") for r in reasons],
        output=ctx.runtime.blobs.shrink(ctx.tenant_id, output),
        error=error,
        fingerprint=fingerprint,
        cluster_label=label,
        retry_in=retry_in,
        run_id=ctx.run_id,
    )


__all__ = [
    "SKIPPED",
    "Concluded",
    "ErrorCategory",
    "ItemRef",
    "Judged",
    "abandon_for_timeout",
    "ainvoke",
    "await_paid_calls",
    "begin",
    "conclude",
    "context",
    "invoke",
    "judge",
    "pause",
    "refusal",
    "release",
    "release_finish",
    "settle",
]
