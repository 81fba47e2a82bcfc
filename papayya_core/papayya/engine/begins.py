"""Group begins: the attempts that threads take up at about the same moment begin in one statement.

A native worker records an attempt as begun just before its thread runs user code (``attempts_begin``:
from then on a crash of the process counts against the item). One statement per item made a drain
pay a round trip per item; here a thread hands its attempt to one writer thread and waits, and the
writer writes every begin waiting when it gets to them in one statement (group commit): a lone begin
costs the same round trip as before, and under load many ride on one. No begin waits for a timer.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future

from papayya.context import AttemptContext

log = logging.getLogger("papayya.engine")

# The begin function: the attempts that did not begin (their lease moved on), or None when the store
# is away (then none began).
Begin = Callable[[Sequence[AttemptContext]], "list[AttemptContext] | None"]


class GroupBegins:
    """Begins attempts for threads, many per statement. ``begin(ctx)`` returns True when the attempt
    began, False when it may not (its lease moved on), None when the store is away."""

    def __init__(self, begin: Begin, *, most: int = 256) -> None:
        self._begin = begin
        self._most = most
        self._queue: queue.SimpleQueue[tuple[AttemptContext, Future[bool | None]] | None] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    def begin(self, ctx: AttemptContext) -> bool | None:
        answer: Future[bool | None] = Future()
        with self._lock:
            if self._closed:
                return None
            if self._thread is None:
                self._thread = threading.Thread(target=self._write, name="papayya-begins", daemon=True)
                self._thread.start()
            self._queue.put((ctx, answer))
        return answer.result()

    def close(self) -> None:
        """Answer what is waiting, then stop the writer thread (begins after this answer None)."""
        with self._lock:
            self._closed = True
            thread = self._thread
            self._queue.put(None)
        if thread is not None:
            thread.join(timeout=30)

    def _write(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self._most:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            self._answer(batch)
            if stop:
                return

    def _answer(self, batch: list[tuple[AttemptContext, Future[bool | None]]]) -> None:
        try:
            left = self._begin([ctx for ctx, _ in batch])
        except BaseException as exc:  # answered to every waiting thread, which releases its item
            log.exception("could not begin %d attempt(s)", len(batch))
            for _, answer in batch:
                answer.set_exception(exc)
            return
        not_begun = None if left is None else {id(c) for c in left}
        for ctx, answer in batch:
            answer.set_result(None if not_begun is None else id(ctx) not in not_begun)
