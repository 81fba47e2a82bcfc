"""Batch mode: an agent's LLM calls sent through the providers' batch APIs (OpenAI Batch, Anthropic
Message Batches) at their batch price, with the same per-item accounting, budgets and replay as live
calls. The agent's code does not change; a run asks for it (``agent.submit(..., llm_mode="batch")``,
or the ``llm_mode`` setting).

The life of a deferred call:

1. **Defer** (inside the attempt, :func:`defer`): an instrumented call the journal does not answer is
   not sent. Its worst case at the batch price is charged to the tenant's and the run's budgets (a
   budget with no room pauses the item here, as for a live call), the request is recorded as a
   pending ``batch_requests`` row under a short opaque ``custom_id``, and the item stops as
   ``waiting`` (``papayya.errors.Waiting``): the worker moves on, and the process may exit.
2. **Form and submit** (:func:`tick`, run by every native worker's monitor and by ``papayya batches
   poll``): pending requests of one provider, endpoint, model and base URL gather for
   ``batch_window_seconds`` (or until a batch is full); a ``llm_batches`` row is written first (the
   intent, leased to one batcher), then the provider creates the batch. A batcher that dies between
   the two leaves the intent behind: its successor adopts the batch the provider made (OpenAI: by the
   ``papayya_batch`` metadata tag; Anthropic: by size and creation time) instead of paying for a
   second.
3. **Poll**, backing off up to ``batch_poll_seconds``; exactly one batcher works on a batch at a time
   (its lease in the store).
4. **Answer**: each row that succeeded is written to the ledger (``mode`` batch, priced at the batch
   rate, with what it would have cost live) and to the journal under the step that asked, and the
   budgets' charge is replaced by the actual cost, in one transaction per chunk of rows. Its item goes
   back to the queue, runs again from the top, and gets the answer from the journal: recorded steps and
   calls are not redone or paid again; code outside ``run.step`` runs again. An agent with two calls
   takes two batch rounds. A row that errored or expired is charged nothing; its item runs again and
   asks again (a new batch round) while its attempts last, and a request error (4xx) fails the item
   at once with the provider's reason.

What a crash may cost: nothing is paid twice (a request's answer is written once, under a row lock,
and a created batch is adopted, not recreated); a batcher killed mid-answer leaves the rest of its
batch to the next batcher, which reads the results again and skips the rows already answered.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NoReturn

from psycopg.types.json import Jsonb
from pydantic_core import to_jsonable_python

from papayya import fingerprint
from papayya.errors import Waiting
from papayya.ledger import call_row, extract_usage
from papayya.models import ErrorCategory
from papayya.pricing import batch_rate, price_call

if TYPE_CHECKING:
    from papayya.batch_api import BatchClient, RowResult
    from papayya.context import AttemptContext, BatchEndpoint, PaidCall
    from papayya.runtime import Runtime

log = logging.getLogger("papayya.batches")

# A batcher's hold on one batch while it submits or reads it, renewed as it goes (before creating the
# provider batch, at each chunk of answers). None: the lease_seconds setting, as for items.
LEASE_SECONDS: float | None = None


def _lease(rt: Runtime) -> float:
    return LEASE_SECONDS if LEASE_SECONDS is not None else rt.settings.lease_seconds


class LostBatch(Exception):
    """Another batcher took this batch over (this one's lease ran out): stop working on it."""


def _renew(rt: Runtime, me: str, batch: dict[str, Any]) -> None:
    if not rt.store.fetch_all(
        "batch_renew", {"batch_id": batch["batch_id"], "worker": me, "lease_seconds": _lease(rt)}
    ):
        raise LostBatch(f"batch {batch['batch_id']}: its lease ran out and another batcher took it over")


MB = 1024 * 1024
LIMITS = {"openai": (50_000, 200 * MB), "anthropic": (100_000, 256 * MB)}  # rows and bytes per batch
FIRST_POLL = 1.0  # seconds after submitting; then doubling up to batch_poll_seconds
CHUNK = 500  # result rows answered per transaction
_SDK_ONLY = frozenset({"extra_headers", "extra_query", "extra_body", "timeout"})


# -- 1. defer (inside an attempt) ---------------------------------------------------------------------


def defer(ctx: AttemptContext, paid: PaidCall, where: BatchEndpoint, kwargs: dict[str, Any]) -> NoReturn:
    """Charge the call's worst case at the batch price, record it as a pending batch request, and stop
    the item as ``waiting``.

    Raises:
        Waiting: always (the item waits for the batch's answer).
        Paused: a budget has no room for the call's worst case.
    """
    rt = ctx.runtime
    rate = batch_rate(paid.provider)
    charge = None if paid.estimate is None or rate is None else paid.estimate * rate
    ctx.check_lease()
    reserved = rt.budgets.reserve(ctx.accounts, charge, what=f"{paid.provider}/{paid.model} (batch)")
    custom_id = f"pp_{uuid.uuid4().hex}"
    try:
        added = rt.store.fetch_all(
            "batch_request_add",
            {
                "custom_id": custom_id,
                "item_id": ctx.item_id,
                "tenant_id": ctx.tenant_id,
                "lease_token": ctx.lease_token,
                "attempt_id": ctx.attempt_id,
                "step_key": paid.key,
                "request_hash": paid.digest,
                "provider": paid.provider,
                "endpoint": where.endpoint,
                "model": paid.model,
                "base_url": where.base_url,
                "body": Jsonb(request_body(kwargs)),
                "charged_usd": reserved,
                "accounts": Jsonb(to_jsonable_python(ctx.accounts.keys())),
            },
        )
    except BaseException:
        rt.budgets.release(ctx.accounts, reserved)
        raise
    if added:  # charged until the answer replaces the charge by the actual cost
        rt.budgets.settle(ctx.accounts, reserved=reserved, actual=reserved)
    else:  # the same request is already on its way (or the lease moved on): nothing more to charge
        rt.budgets.release(ctx.accounts, reserved)
    raise Waiting(custom_id)


_said_live: set[tuple[str, str, bool]] = set()


def sent_live(step: str, provider: str, *, streamed: bool) -> None:
    """A call of a run in batch mode that no provider batch can carry goes live: say so, once per
    process and kind of call, since it is paid at the live price."""
    key = (step, provider, streamed)
    if key in _said_live:
        return
    _said_live.add(key)
    why = "a streamed call" if streamed else f"no batch API carries {step} calls ({provider})"
    log.warning("batch mode: %s is sent live, at the live price (docs/batch.md, Limits)", why)


def request_body(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The request as the provider's endpoint takes it: the SDK call's keyword arguments without the
    SDK's own options (headers, timeout), with ``extra_body`` merged in, as JSON."""
    body = {
        k: v for k, v in kwargs.items() if k not in _SDK_ONLY and type(v).__name__ not in ("NotGiven", "Omit")
    }
    extra = kwargs.get("extra_body")
    if isinstance(extra, dict):
        body.update(extra)
    jsonable: dict[str, Any] = to_jsonable_python(body, fallback=repr)
    return jsonable


# -- 2-4. the batcher -----------------------------------------------------------------------------------


@dataclass
class TickReport:
    """What one :func:`tick` did."""

    formed: int = 0  # provider batches created (or adopted)
    polled: int = 0  # open batches asked about
    ended: int = 0  # batches whose results were read
    answered: int = 0  # requests answered (ledger + journal)
    failed: int = 0  # requests that errored, expired or were cancelled
    woken: int = 0  # waiting items sent back to the queue
    items_failed: int = 0  # items failed for good by a request error
    errors: int = 0  # batches a provider or transport error left for a later tick
    unknown: int = 0  # result rows whose custom_id papayya did not send (logged, ignored)


def batcher_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def tick(rt: Runtime, *, worker: str | None = None, force: bool = False) -> TickReport:
    """One round of the batcher: send the pending requests that are due, poll the open batches that
    are due, and answer those that ended. Safe to run in many processes at once (each batch is worked
    on by one at a time). ``force``: send pending requests now, whatever their age."""
    me = worker or batcher_name()
    report = TickReport()
    providers = servable()
    if not providers:  # no provider key here: leave the batches to a process that has one
        return report
    clients = _Clients()
    try:
        window = 0.0 if force else rt.settings.batch_window_seconds
        due = rt.store.fetch_all("batch_groups_due", {"window": window, "providers": providers})
        for group in due:
            _form(rt, me, group)
        leased = rt.store.fetch_all(
            "batch_lease", {"worker": me, "lease_seconds": _lease(rt), "limit": 32, "providers": providers}
        )
        for batch in leased:
            try:
                client = clients.get(batch)
                if batch["status"] == "forming":
                    _submit(rt, me, client, batch)
                    report.formed += 1
                else:
                    report.polled += 1
                    _poll(rt, me, client, batch, report)
            except Exception as exc:  # the provider or the network: this batch waits for a later tick
                report.errors += 1
                log.warning("batch %s: %s; tried again later", batch["batch_id"], _one_line(exc))
                rt.store.execute(
                    "batch_polled",
                    {
                        "batch_id": batch["batch_id"],
                        "worker": me,
                        "provider_status": None,
                        "delay": min(rt.settings.batch_poll_seconds, 30.0),
                    },
                )
    finally:
        clients.close()
    return report


KEYS = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}


def servable() -> list[str]:
    """The providers whose batches this process can send and read: their SDK is installed and their
    key is in the environment. A worker without a provider's key never takes that provider's batches
    (it would only fail on them, and hold them up while it did)."""
    import importlib.util

    return [p for p, key in KEYS.items() if os.environ.get(key) and importlib.util.find_spec(p) is not None]


class _Clients:
    """The provider clients of one round, one per provider and base URL, closed when it ends."""

    def __init__(self) -> None:
        self._open: dict[tuple[str, str], BatchClient] = {}

    def get(self, batch: dict[str, Any]) -> BatchClient:
        from papayya.batch_api import client_for

        key = (batch["provider"], batch["base_url"])
        if key not in self._open:
            self._open[key] = client_for(batch["provider"], base_url=batch["base_url"] or None)
        return self._open[key]

    def close(self) -> None:
        for client in self._open.values():
            try:
                client.close()
            except Exception:
                log.debug("closing a provider client failed", exc_info=True)
        self._open.clear()


def _form(rt: Runtime, me: str, group: dict[str, Any]) -> None:
    """Batches of a group's pending requests, each within the provider's rows and bytes: all of them
    once the oldest has waited the window, before that only as many as fill whole batches."""
    limit, max_bytes = LIMITS.get(group["provider"], (10_000, 100 * MB))
    left = group["pending"] if group["aged"] else group["pending"] // limit * limit
    while left > 0:
        rows = rt.store.fetch_all(
            "batch_form",
            {
                "batch_id": uuid.uuid4(),
                "provider": group["provider"],
                "endpoint": group["endpoint"],
                "model": group["model"],
                "base_url": group["base_url"],
                "limit": min(limit, left),
                # room for each JSONL line's envelope (custom_id, method, url) around its body
                "max_bytes": int(max_bytes * 0.9),
                "worker": me,
                "lease_seconds": _lease(rt),
            },
        )
        if not rows:  # another batcher took them
            return
        left -= len(rows)


def _submit(rt: Runtime, me: str, client: BatchClient, batch: dict[str, Any]) -> None:
    """Create the provider batch of a forming one, unless a batcher that died after creating it left
    it behind: then adopt it."""
    from papayya.batch_api import BatchRow

    tag = str(batch["batch_id"])
    known = {
        r["provider_batch_id"]
        for r in rt.store.fetch_all(
            "batch_known_ids",
            {"provider": batch["provider"], "base_url": batch["base_url"], "since": batch["created_at"]},
        )
    }
    found = client.find(tag, rows=batch["rows"], since=batch["created_at"], known=known)
    if len(found) > 1:
        raise RuntimeError(
            f"{len(found)} provider batches could be the one created for it ({', '.join(found)}); "
            "papayya waits for them to end before choosing"
        )
    if found:
        provider_batch_id = found[0]
        log.warning("batch %s: adopted provider batch %s, created by a batcher that stopped", tag, found[0])
    else:
        rows = [
            BatchRow(r["custom_id"], r["body"])
            for r in rt.store.fetch_all("batch_rows", {"batch_id": batch["batch_id"]})
        ]
        _renew(rt, me, batch)  # a batcher that froze past its lease creates nothing
        try:
            provider_batch_id = client.create(batch["endpoint"], rows, tag)
        except ValueError as exc:  # refused before anything was sent, and it would be again
            _refuse(rt, me, batch, rows, str(exc))
            return
    recorded = rt.store.fetch_all(
        "batch_submitted",
        {
            "batch_id": batch["batch_id"],
            "worker": me,
            "provider_batch_id": provider_batch_id,
            "poll": FIRST_POLL,
        },
    )
    if not recorded and not found and _recorded_as(rt, batch) != provider_batch_id:
        # This batcher froze during the create and another took the batch over meanwhile and created
        # its own: this one is a duplicate nobody records. Cancel it before it is paid for. (Had the
        # other adopted this very batch, it is recorded, and stays.)
        log.warning(
            "batch %s: lost while creating provider batch %s; cancelling that duplicate",
            tag,
            provider_batch_id,
        )
        client.cancel(provider_batch_id)
        return
    log.info(
        "batch %s: %d request(s) sent as %s batch %s",
        tag,
        batch["rows"],
        batch["provider"],
        provider_batch_id,
    )


def _refuse(rt: Runtime, me: str, batch: dict[str, Any], rows: list[Any], why: str) -> None:
    """A batch papayya cannot send (its provider client refused it before sending anything): each of
    its requests fails with the reason, and so do their items (asking again would be refused again)."""
    from papayya.batch_api import RowResult

    log.warning("batch %s: not sent: %s", batch["batch_id"], why)
    refused = (
        RowResult(r.custom_id, "errored", None, f"papayya could not send the batch: {why}") for r in rows
    )
    _answer(rt, me, batch, refused, TickReport())
    rt.store.execute(
        "batch_ended",
        {
            "batch_id": batch["batch_id"],
            "worker": me,
            "status": "failed",
            "provider_status": None,
            "error": why,
        },
    )


def _recorded_as(rt: Runtime, batch: dict[str, Any]) -> str | None:
    row = rt.store.fetch_one("batch_provider_id", {"batch_id": batch["batch_id"]})
    return None if row is None else row["provider_batch_id"]


def _poll(rt: Runtime, me: str, client: BatchClient, batch: dict[str, Any], report: TickReport) -> None:
    state = client.state(batch["provider_batch_id"])
    if not state.ended:
        delay = min(rt.settings.batch_poll_seconds, FIRST_POLL * 2 ** min(batch["polls"] + 1, 20))
        rt.store.execute(
            "batch_polled",
            {
                "batch_id": batch["batch_id"],
                "worker": me,
                "provider_status": state.provider_status,
                "delay": delay,
            },
        )
        return
    # A batch the provider rejected as a whole has its rows back as errored, with the reason.
    _answer(rt, me, batch, client.results(batch["provider_batch_id"]), report)
    rt.store.execute(
        "batch_ended",
        {
            "batch_id": batch["batch_id"],
            "worker": me,
            "status": "failed" if state.failed_reason else "ended",
            "provider_status": state.provider_status,
            "error": state.failed_reason,
        },
    )
    report.ended += 1


def _chunks(results: Iterable[RowResult]) -> Iterator[list[RowResult]]:
    chunk: list[RowResult] = []
    for row in results:
        chunk.append(row)
        if len(chunk) >= CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _answer(
    rt: Runtime, me: str, batch: dict[str, Any], results: Iterable[RowResult], report: TickReport
) -> None:
    """Write each row's answer (or failure) and wake its item, a chunk of rows per transaction. A row
    already answered (a batcher before this one got that far) is skipped; a row papayya does not know
    is logged and counted."""
    unknown = 0
    for chunk in _chunks(results):
        _renew(rt, me, batch)
        with rt.store.transaction():
            requests = {
                r["custom_id"]: r
                for r in rt.store.fetch_all(
                    "batch_request_get",
                    {"custom_ids": [c.custom_id for c in chunk], "batch_id": batch["batch_id"]},
                )
            }
            deltas: dict[tuple[str, ...], tuple[dict[str, Any], Decimal]] = {}
            touched: list[uuid.UUID] = []
            doomed: list[tuple[dict[str, Any], str]] = []
            for row in chunk:
                request = requests.get(row.custom_id)
                if request is None:
                    unknown += 1
                    continue
                if request["status"] != "submitted":
                    continue  # answered before (a batcher that stopped midway)
                touched.append(request["item_id"])
                charged = Decimal(request["charged_usd"])
                if row.outcome == "succeeded" and row.response is not None:
                    cost = _record(rt, batch, request, row.response)
                    _delta(deltas, request["accounts"], (cost or Decimal(0)) - charged)
                    rt.store.execute(
                        "batch_request_answered",
                        {"custom_id": row.custom_id, "status": "answered", "error": None},
                    )
                    report.answered += 1
                else:
                    why = row.error or f"the provider's batch row was {row.outcome}"
                    _delta(deltas, request["accounts"], -charged)
                    rt.store.execute(
                        "batch_request_answered",
                        {"custom_id": row.custom_id, "status": "failed", "error": why},
                    )
                    report.failed += 1
                    if not row.retryable or _tries_spent(rt, request):
                        doomed.append((request, why))
            for keys, delta in deltas.values():
                if delta:
                    rt.store.budget_settle(keys, reserved=Decimal(0), actual=delta)
            for request, why in doomed:
                report.items_failed += _fail_item(rt, request, why)
            woken = rt.store.fetch_all("batch_items_wake", {"item_ids": touched})
            report.woken += len(woken)
        for agent in {w["agent_name"] for w in woken}:
            rt.store.fetch_all("work_notify", {"agent": agent})
        runs = {r["run_id"]: r["tenant_id"] for r, _ in doomed}
        if runs:
            rt.store.runs_complete(list(runs))
    report.unknown += unknown
    if unknown:
        log.warning(
            "batch %s: %d result row(s) with a custom_id papayya did not send; ignored",
            batch["batch_id"],
            unknown,
        )


def _delta(
    deltas: dict[tuple[str, ...], tuple[dict[str, Any], Decimal]], keys: dict[str, Any], amount: Decimal
) -> None:
    key = (keys["tenant_id"], keys["tenant_period"], keys["run_key"])
    held = deltas.get(key)
    deltas[key] = (keys, amount + (held[1] if held else Decimal(0)))


def _record(
    rt: Runtime, batch: dict[str, Any], request: dict[str, Any], response: dict[str, Any]
) -> Decimal | None:
    """The ledger row and journal step of one answered request; its cost at the batch price."""
    provider = request["provider"]
    got_model, usage, stop = extract_usage(provider, response)
    model = got_model or request["model"]
    overrides, _ = rt.control.terms(request["tenant_id"])
    price = price_call(provider, model, usage, overrides, mode="batch")
    live = price_call(provider, model, usage, overrides)
    call = call_row(
        (request["tenant_id"], request["run_id"], request["item_id"], request["attempt_id"]),
        step_key=request["step_key"],
        provider=provider,
        model=model,
        usage=usage,
        stop_reason=stop,
        latency_ms=None,
        price=price,
        idempotency_key=f"papayya-batch-{request['custom_id']}",
    )
    rt.store.llm_call_record(
        {
            **call.as_params(),
            "reserved_usd": request["charged_usd"],
            "lease_token": None,
            "mode": "batch",
            "live_cost_usd": live.cost_usd,
        },
        journal_result=rt.blobs.shrink(request["tenant_id"], response),
        journal=True,
        request_hash=request["request_hash"],
    )
    try:
        rt.hooks.llm_call_recorded(call)
    except Exception:  # observers never break the host
        log.exception("a plugin failed on a batch call's record")
    return price.cost_usd


def _tries_spent(rt: Runtime, request: dict[str, Any]) -> bool:
    """Whether the item's step has failed in batches as many times as the item may be attempted."""
    row = rt.store.fetch_one(
        "batch_request_tries",
        {"item_id": request["item_id"], "tenant_id": request["tenant_id"], "step_key": request["step_key"]},
    )
    return row is not None and row["failed"] >= row["max_attempts"]


def _fail_item(rt: Runtime, request: dict[str, Any], why: str) -> int:
    """Fail a waiting item whose batch request the provider refused (a request error: asking again
    would be refused again), with the provider's reason as its error."""
    fp, pattern = fingerprint.failure_of("BatchRequestFailed", why, ErrorCategory.PROVIDER.value)
    error = {
        "type": "BatchRequestFailed",
        "message": why,
        "pattern": pattern,
        "category": ErrorCategory.PROVIDER.value,
        "frame": None,
        "traceback": "",
        "retryable": False,
    }
    rows = rt.store.fetch_all(
        "batch_item_fail",
        {
            "item_id": request["item_id"],
            "tenant_id": request["tenant_id"],
            "error": Jsonb(error),
            "fingerprint": fp,
            "label": fingerprint.failure_label(
                "BatchRequestFailed", pattern, None, ErrorCategory.PROVIDER.value
            ),
        },
    )
    return len(rows)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


# -- reading ----------------------------------------------------------------------------------------------


def list_batches(rt: Runtime, *, limit: int = 50) -> list[dict[str, Any]]:
    """The most recent provider batches, newest first, with their requests' counts."""
    return [
        dict(r)
        for r in rt.store.fetch_all(
            "batches_list", {"batch_id": None, "provider_batch_id": None, "limit": limit}
        )
    ]


def show_batch(rt: Runtime, ref: str) -> dict[str, Any] | None:
    """One batch by papayya's id or the provider's."""
    try:
        batch_id: uuid.UUID | None = uuid.UUID(ref)
    except ValueError:
        batch_id = None
    rows = rt.store.fetch_all("batches_list", {"batch_id": batch_id, "provider_batch_id": ref, "limit": 1})
    return dict(rows[0]) if rows else None


def pending(rt: Runtime) -> list[dict[str, Any]]:
    """Requests waiting to be sent, per provider, endpoint and model."""
    return [dict(r) for r in rt.store.fetch_all("batch_pending_counts", {})]


def run_summary(rt: Runtime, run_id: uuid.UUID, tenant_id: str) -> dict[str, Any]:
    """A run's batch mode: items waiting, open batches, pending requests, batch cost and live cost."""
    row = rt.store.fetch_one("run_batch_summary", {"run_id": run_id, "tenant_id": tenant_id})
    return dict(row) if row else {}


__all__ = [
    "TickReport",
    "defer",
    "list_batches",
    "pending",
    "request_body",
    "run_summary",
    "show_batch",
    "tick",
]
