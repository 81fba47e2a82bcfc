"""GroupBegins answers every thread with its own attempt's fate, many attempts per statement under
load, one when alone."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from papayya.engine.begins import GroupBegins


class Ctx:
    def __init__(self, n: int) -> None:
        self.n = n


def test_threads_taken_up_together_begin_in_few_statements_and_each_learns_its_own_fate() -> None:
    statements: list[int] = []

    def begin(ctxs: Sequence[Any]) -> list[Any]:
        statements.append(len(ctxs))
        time.sleep(0.01)  # a round trip: begins arriving meanwhile wait for the next statement
        return [c for c in ctxs if c.n % 7 == 0]  # these lost their lease

    group = GroupBegins(begin)
    answers: dict[int, bool | None] = {}
    threads = [
        threading.Thread(target=lambda n=n: answers.__setitem__(n, group.begin(Ctx(n)))) for n in range(64)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    group.close()
    assert answers == {n: n % 7 != 0 for n in range(64)}
    assert sum(statements) == 64
    assert len(statements) < 64  # some rode together


def test_a_lone_begin_is_written_at_once_and_a_store_away_or_a_failure_reaches_the_thread() -> None:
    results: list[Any] = [[]]

    def begin(ctxs: Sequence[Any]) -> list[Any] | None:
        outcome = results.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    group = GroupBegins(begin)
    assert group.begin(Ctx(1)) is True
    results.append(None)
    assert group.begin(Ctx(2)) is None  # the store is away: nothing began
    results.append(RuntimeError("boom"))
    with pytest.raises(RuntimeError, match="boom"):
        group.begin(Ctx(3))
    group.close()
    assert group.begin(Ctx(4)) is None  # closed: nothing begins any more
