"""The reaper: no item stays ``running`` after its worker is gone.

A worker that dies (SIGKILL, OOM, a lost machine), freezes or loses the database stops extending its
leases. Once an item's lease has expired on the database clock, ``sweep`` keeps its attempt as
``stalled`` and gives the item back: a native item to the queue, an item of another backend (Celery,
Temporal, SQS) as ``stalled`` for that backend to re-drive. An item that lost its worker
``max_stalls`` times is failed, so a poison item that kills every process it lands on never loops.
Only an item whose attempt had begun counts as having lost its worker: one that was claimed into the
worker's buffer and never started crashed nothing, and goes back without a stall.

Every native worker runs a sweep every few seconds; sweeps on many machines do not collide (rows are
taken with SKIP LOCKED) and the worker that was frozen cannot complete the item later: its writes
carry the old fencing token.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from uuid import UUID

from papayya import fingerprint
from papayya.execute import ItemRef
from papayya.models import ErrorCategory, ErrorInfo

if TYPE_CHECKING:
    from papayya.runtime import Runtime

log = logging.getLogger("papayya.reaper")


class WorkerLost(Exception):
    """An item's worker was lost (its lease expired mid-attempt) too many times."""


def _lost(max_stalls: int) -> dict[str, Any]:
    """The failure written on an item that lost its worker ``max_stalls`` times."""
    exc = WorkerLost(
        f"the item lost its worker {max_stalls} times (its lease expired mid-attempt each time); "
        "it may crash the process that runs it"
    )
    fp, pattern, _ = fingerprint.failure(exc, ErrorCategory.PAPAYYA)
    info = ErrorInfo(type="WorkerLost", message=str(exc), pattern=pattern, category=ErrorCategory.PAPAYYA)
    return {
        "error": info.model_dump(mode="json"),
        "fingerprint": fp,
        "label": fingerprint.failure_label("WorkerLost", pattern, None, ErrorCategory.PAPAYYA.value),
    }


@dataclass
class Swept:
    """What one sweep did."""

    requeued: int = 0  # back to the queue (native); ``released`` of them never began
    released: int = 0
    stalled: list[ItemRef] = field(default_factory=list)  # items of other backends, to re-drive
    failed: int = 0

    def __bool__(self) -> bool:
        return bool(self.requeued or self.stalled or self.failed)


def sweep(rt: Runtime, *, limit: int = 1000) -> Swept:
    """Recover every item whose lease expired (up to ``limit``), then hand this process's backend the
    stalled items it should re-drive; see the module docstring."""
    max_stalls = rt.settings.max_stalls
    rows = rt.store.items_reap(max_stalls=max_stalls, lost=_lost(max_stalls), limit=limit)
    swept = Swept()
    for r in rows:
        if r["status"] == "queued":
            swept.requeued += 1
            swept.released += not r["began"]
        elif r["status"] == "failed":
            swept.failed += 1
            log.error("item %s of run %s lost its worker %d times; failed", r["key"], r["run_id"], max_stalls)
    if rows:
        log.warning(
            "reaper: %d item(s) whose worker was lost: %d requeued (%d of them never began), %d failed, "
            "%d stalled for their backend",
            len(rows),
            swept.requeued,
            swept.released,
            swept.failed,
            len(rows) - swept.requeued - swept.failed,
        )
    for name in {r["agent_name"] for r in rows if r["status"] == "queued"}:
        rt.store.notify_work(name)
    _complete(rt, [r["run_id"] for r in rows if r["status"] == "failed"])
    redrive = getattr(rt.backend, "redrive", None)
    if redrive is not None:
        # Stalled items of this backend's running runs: re-driven once, and again only if no attempt
        # began within REDRIVE_LEASES leases (the message was lost), not once per lease period: a
        # broker's own redelivery then races no duplicate of papayya's.
        due = rt.store.items_redrive_due(rt.backend.name, rt.settings.lease_seconds * REDRIVE_LEASES, limit)
        swept.stalled = [ItemRef(r["item_id"], r["key"], r["run_id"], r["tenant_id"]) for r in due]
        if swept.stalled:
            try:
                redrive(rt, swept.stalled)
            except Exception:
                log.exception("could not re-drive %d stalled item(s); retried next lease period", len(due))
    return swept


REDRIVE_LEASES = 5
_SCAN_EVERY = 30.0
_scanned = [0.0]
_COMPACT_EVERY = 300.0
_compacted = [0.0]


def _complete(rt: Runtime, run_ids: list[UUID]) -> None:
    """Complete the runs whose last item the reaper just failed and, every ``_SCAN_EVERY`` seconds,
    any running run with nothing left to do (an intake run whose day is over, a finisher that died
    before its commit); every ``_COMPACT_EVERY`` seconds, fold the per-run counter shards of gone
    connections (``papayya.counts_compact()``), so a run's counters stay a handful of rows."""
    now = time.monotonic()
    if now - _scanned[0] >= _SCAN_EVERY:
        _scanned[0] = now
        run_ids = run_ids + [r["run_id"] for r in rt.store.fetch_all("runs_open_finished", {})]
        _unpark(rt)
    if now - _compacted[0] >= _COMPACT_EVERY:
        _compacted[0] = now
        rt.store.fetch_one("counts_compact", {})
    done = rt.store.runs_complete(run_ids)
    if done:
        log.info("reaper: %d run(s) with nothing left to do completed", len(done))


def _unpark(rt: Runtime, limit: int = 1000) -> None:
    """Send back to work the items left ``paused`` in a running run (a park that raced a resume before
    ``item_park`` locked the run row, or a store written by an older papayya): nothing else would."""
    grace = rt.settings.lease_seconds
    rows = rt.store.fetch_all("items_unpark", {"grace": grace, "limit": limit})
    if not rows:
        return
    log.warning("reaper: %d item(s) left paused in running runs sent back to work", len(rows))
    for name in {r["agent_name"] for r in rows if r["status"] == "queued"}:
        rt.store.notify_work(name)


class Reaper:
    """A daemon thread that sweeps every ``interval`` seconds (default: a third of the lease)."""

    def __init__(self, rt: Runtime, interval: float | None = None) -> None:
        self.rt = rt
        self.interval = interval or max(0.2, min(rt.settings.lease_seconds / 3, 10.0))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="papayya-reaper", daemon=True)

    def start(self) -> Reaper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                sweep(self.rt)
            except Exception as exc:  # the database is away: try again next interval
                log.warning("reaper: sweep failed (%s); retrying in %.1fs", exc, self.interval)
