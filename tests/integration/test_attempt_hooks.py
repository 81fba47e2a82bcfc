"""Hooks see an attempt start only when it begins: a native worker's buffered item that is given back
before a thread takes it never started, so observers (OpenTelemetry spans, a plugin) see neither a
start nor a finish for it, and every start they see has its finish and its attempt row.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg

import papayya
from papayya import engine
from papayya.hookspecs import hookimpl
from papayya.runtime import Runtime

STARTED = threading.Event()


@papayya.agent(name="hooks-slow")
def slow(item: papayya.Item) -> str:
    STARTED.set()
    time.sleep(0.3)
    return item.id


def test_a_buffered_item_given_back_at_shutdown_never_started_for_hooks(
    rt: Runtime, tenant: str, database_url: str
) -> None:
    seen: dict[str, list[Any]] = {"started": [], "finished": []}

    class Recorder:
        @hookimpl
        def papayya_attempt_started(self, ctx: Any) -> None:
            seen["started"].append(ctx.attempt_id)

        @hookimpl
        def papayya_attempt_finished(self, ctx: Any, status: str, reasons: list[Any]) -> None:
            seen["finished"].append(ctx.attempt_id)

    rt.pm.register(Recorder())
    # Given a worker with one thread and a buffer of four, stopped while the first item runs
    STARTED.clear()
    handle = slow.submit([{"id": f"h{n}"} for n in range(6)], tenant=tenant)
    worker = engine.Worker(rt, [slow], concurrency=1, prefetch=4, run_ids=[handle.run_id], poll=0.1)
    runner = threading.Thread(target=worker.run, kwargs={"grace": 5.0}, daemon=True)
    runner.start()
    try:
        assert STARTED.wait(30)
    finally:
        worker.stop()
        runner.join(30)
    assert not runner.is_alive()

    # Then hooks saw exactly the attempts that began: each start has its finish and its attempt row,
    # and the items given back from the buffer left no trace (they are queued, with no attempt)
    with psycopg.connect(database_url) as conn:
        attempts = {
            r[0]
            for r in conn.execute(
                "SELECT attempt_id FROM papayya.attempts WHERE run_id = %s", (handle.run_id,)
            )
        }
        queued = conn.execute(
            "SELECT count(*) FROM papayya.items WHERE run_id = %s AND status = 'queued' AND attempts = 0",
            (handle.run_id,),
        ).fetchone()
    assert queued is not None
    assert queued[0] >= 1  # some items were only buffered
    assert set(seen["started"]) == set(seen["finished"]) == attempts
    assert len(seen["started"]) == len(attempts) < 6


def test_a_worker_whose_runtime_is_closed_stops_instead_of_retrying_forever(rt: Runtime, tenant: str) -> None:
    # Given a long-lived in-process worker on a run
    STARTED.clear()
    handle = slow.submit([{"id": "only"}], tenant=tenant)
    worker = engine.Worker(rt, [slow], concurrency=1, run_ids=[handle.run_id], poll=0.1)
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            worker.run(grace=1.0)
        except BaseException as exc:  # the thread reports how it ended
            failure.append(exc)

    runner = threading.Thread(target=serve, daemon=True)
    runner.start()
    try:
        assert STARTED.wait(30)
        # When the runtime it uses is closed under it (a closed pool never reopens)
        papayya.reset()
        runner.join(30)
        # Then it ends with one sentence, instead of logging "retried next second" until killed
        assert not runner.is_alive()
    finally:
        worker.stop()
        runner.join(5)
    assert len(failure) == 1
    assert isinstance(failure[0], papayya.StoreClosed)
    assert "stop workers before closing papayya" in str(failure[0])
