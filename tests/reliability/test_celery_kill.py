"""A Celery worker SIGKILLed mid-item (``celery worker -P prefork`` in a subprocess, Redis broker): the item
is never silently gone, and the LLM call it recorded before dying is not paid again.

- Only the pool process dies: with ``acks_late`` and ``reject_on_worker_lost`` the broker redelivers the
  message; papayya takes the item over once the dead attempt's lease expires (kept as ``stalled``).
- The whole worker dies: nothing redelivers (Redis waits out its visibility timeout); the reaper of the
  next worker marks the item ``stalled`` and publishes it again.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from celery import Celery

import papayya_celery
from papayya.runtime import Runtime
from papayya.testing import FakeProvider
from tests.conftest import need_service

pytestmark = pytest.mark.slow

BROKER = "redis://127.0.0.1:6379/14"

APP = textwrap.dedent(
    """
    import os, time, pathlib
    import openai
    from celery import Celery
    import papayya_celery, papayya_openai
    from papayya import agent

    STATE = pathlib.Path(os.environ["STATE_DIR"])
    app = Celery("killapp", broker=os.environ["BROKER"])
    app.conf.update(
        task_default_queue=os.environ["QUEUE"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
    )
    papayya_celery.install(app)
    client = papayya_openai.instrument(
        openai.OpenAI(base_url=os.environ["FAKE_URL"], api_key="test", max_retries=0)
    )

    @app.task(acks_late=True, reject_on_worker_lost=True)
    @agent
    def enrich(item):
        reply = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": item.id}]
        )
        (STATE / f"{item.id}.pid").write_text(str(os.getpid()))
        while (STATE / "hold").exists():  # the test kills this process here
            time.sleep(0.05)
        return {"answer": reply.choices[0].message.content}
    """
)


def _redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return True
    except OSError:
        return False


def _item(url: str, tenant: str) -> dict[str, Any] | None:
    with psycopg.connect(url, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute(
            "SELECT i.item_id, i.status, i.stalls, "
            "(SELECT array_agg(a.status ORDER BY a.number) FROM papayya.attempts a "
            " WHERE a.item_id = i.item_id) "
            "AS attempts, (SELECT count(*) FROM papayya.llm_calls c WHERE c.item_id = i.item_id) AS calls "
            "FROM papayya.items i WHERE i.tenant_id = %s",
            (tenant,),
        ).fetchone()


def _wait(
    predicate: Callable[[], bool], what: str, proc: subprocess.Popen[bytes], timeout: float = 90
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def celery_worker(
    rt: Runtime, database_url: str, fake: FakeProvider, tmp_path: Path
) -> Iterator[tuple[Callable[[], subprocess.Popen[bytes]], Celery, Path]]:
    """Start ``celery worker -P prefork`` subprocesses on a fresh queue; a client app for that queue."""
    if not _redis_up():
        need_service("Redis does not answer on 127.0.0.1:6379")
    (tmp_path / "killapp.py").write_text(APP)
    state = tmp_path / "state"
    state.mkdir()
    queue = f"papayya-kill-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAPAYYA_")}
    env.update(
        PAPAYYA_DATABASE_URL=database_url,
        PAPAYYA_LEASE_SECONDS="2",
        BROKER=BROKER,
        QUEUE=queue,
        STATE_DIR=str(state),
        FAKE_URL=fake.openai_url,
        PYTHONPATH=os.pathsep.join([str(tmp_path), os.getcwd()]),
    )
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Any] = []

    def start() -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "celery", "-A", "killapp", "worker", "-P", "prefork", "-c", "2"]
        cmd += ["-Q", queue, "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "info"]
        log = open(tmp_path / f"worker-{len(procs)}.log", "wb")  # noqa: SIM115 - closed at teardown
        logs.append(log)
        proc = subprocess.Popen(
            cmd, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        procs.append(proc)
        return proc

    client = Celery("killapp-client", broker=BROKER)
    client.conf.update(task_default_queue=queue)
    try:
        yield start, client, state
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        for log in logs:
            log.close()


def _publish(client: Celery, tenant: str, key: str) -> None:
    client.send_task(
        "killapp.enrich", args=({"question": key},), headers=papayya_celery.headers(tenant, key=key)
    )


def test_a_pool_process_killed_mid_item_is_redelivered_and_not_billed_twice(
    celery_worker: Any, database_url: str, fake: FakeProvider, tenant: str
) -> None:
    start, client, state = celery_worker
    proc = start()
    (state / "hold").touch()
    # Given an item whose LLM call is recorded, and its pool process stuck after it
    _publish(client, tenant, "doc-1")
    _wait((state / "doc-1.pid").exists, "the item to reach its hold", proc)
    _wait(lambda: (_item(database_url, tenant) or {}).get("calls") == 1, "the recorded call", proc)
    # When that pool process is SIGKILLed (the worker itself lives on)
    os.kill(int((state / "doc-1.pid").read_text()), signal.SIGKILL)
    (state / "hold").unlink()
    # Then the item ends succeeded on a new attempt that answered from the journal
    _wait(
        lambda: (_item(database_url, tenant) or {}).get("status") == "succeeded", "the item to finish", proc
    )
    row = _item(database_url, tenant)
    assert row is not None
    assert row["attempts"][0] == "stalled"
    assert row["attempts"][-1] == "succeeded"
    assert row["calls"] == 1
    assert fake.count == 1  # the recorded call was not paid again
    assert proc.poll() is None


def test_a_worker_killed_whole_leaves_a_stalled_item_that_the_next_workers_reaper_redrives(
    celery_worker: Any, database_url: str, fake: FakeProvider, tenant: str
) -> None:
    start, client, state = celery_worker
    first = start()
    (state / "hold").touch()
    _publish(client, tenant, "doc-2")
    _wait((state / "doc-2.pid").exists, "the item to reach its hold", first)
    # When the whole worker (main and pool processes) is SIGKILLed mid-item
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    (state / "hold").unlink()
    row = _item(database_url, tenant)
    assert row is not None
    assert row["status"] == "running"  # visible, not gone; Redis will not redeliver for an hour
    # Then the next worker's reaper marks it stalled and publishes it again, and it finishes
    second = start()
    _wait(
        lambda: (_item(database_url, tenant) or {}).get("status") == "succeeded", "the re-driven item", second
    )
    row = _item(database_url, tenant)
    assert row is not None
    assert row["attempts"] == ["stalled", "succeeded"]
    assert row["stalls"] == 1
    assert fake.count == 1
