"""What a native worker holds: every item it claimed, from the claim to the write of its result, with
the state of its attempt (buffered, running, judged) and whether the attempt began in the store.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from uuid import UUID

from papayya.context import AttemptContext


class Held:
    """What this worker holds: claimed items, each ``buffered`` (claimed, no thread yet), ``running``
    (with a deadline when its agent has a timeout) or ``judged`` (its result is on the way to the
    writer). The heartbeat extends all of their leases. Exactly one party moves an attempt from
    ``running`` to ``judged``: the thread that ran it, the watchdog (timeout) or the shutdown (release);
    the others see they lost and let go, so an item gets exactly one verdict from this worker."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[UUID, tuple[AttemptContext, str, float | None]] = {}
        self._begun: set[UUID] = set()  # attempts recorded as begun in the store (attempts_begin)

    def __len__(self) -> int:
        with self._lock:
            return len(self._held)

    def add(self, ctx: AttemptContext) -> None:
        with self._lock:
            self._held[ctx.attempt_id] = (ctx, "buffered", None)

    def began(self, ctx: AttemptContext) -> bool:
        """Whether the attempt is recorded as begun (a crash from now on counts against the item)."""
        with self._lock:
            return ctx.attempt_id in self._begun

    def mark_begun(self, ctxs: Iterable[AttemptContext]) -> None:
        with self._lock:
            self._begun.update(c.attempt_id for c in ctxs if c.attempt_id in self._held)

    def start(self, ctx: AttemptContext) -> bool:
        """buffered -> running; False when the attempt was given back meanwhile (shutdown)."""
        timeout = ctx.agent.timeout
        with self._lock:
            entry = self._held.get(ctx.attempt_id)
            if entry is None or entry[1] != "buffered":
                return False
            self._held[ctx.attempt_id] = (ctx, "running", time.monotonic() + timeout if timeout else None)
            return True

    def judge(self, ctx: AttemptContext) -> bool:
        """running -> judged, by the thread that ran it; False when the watchdog or shutdown won."""
        with self._lock:
            entry = self._held.get(ctx.attempt_id)
            if entry is None or entry[1] != "running":
                return False
            self._held[ctx.attempt_id] = (ctx, "judged", None)
            return True

    def overdue(self) -> list[AttemptContext]:
        """Running attempts past their deadline, moved to judged (the watchdog concludes them)."""
        now = time.monotonic()
        with self._lock:
            late = [
                c for c, state, d in self._held.values() if state == "running" and d is not None and now >= d
            ]
            for c in late:
                self._held[c.attempt_id] = (c, "judged", None)
            return late

    def take_unjudged(self) -> list[AttemptContext]:
        """Every buffered or running attempt, moved to judged (shutdown gives them back)."""
        with self._lock:
            taken = [c for c, state, _ in self._held.values() if state in ("buffered", "running")]
            for c in taken:
                self._held[c.attempt_id] = (c, "judged", None)
            return taken

    def remove(self, ctx: AttemptContext) -> None:
        with self._lock:
            self._held.pop(ctx.attempt_id, None)
            self._begun.discard(ctx.attempt_id)

    def contexts(self) -> list[AttemptContext]:
        with self._lock:
            return [c for c, _, _ in self._held.values()]

    def runs(self) -> set[UUID]:
        with self._lock:
            return {c.run_id for c, _, _ in self._held.values()}
