"""A Celery worker on Redis SIGKILLed whole while it holds prefetched messages (``celery worker -P prefork
-c 1``, ``worker_prefetch_multiplier=4``, in a subprocess): the messages it took but had not started go
back to their queue after ``PAPAYYA_CELERY_UNACKED_SECONDS``, not after Redis's visibility timeout (an
hour), and every item ends terminal, run to completion once.

Early ack (the issue's case) and late ack both: with either, a prefetched message stays unacknowledged in
Redis until its task starts. The next worker holds prefetched messages longer than the bound while it
works through them, and none of them is taken from it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from celery import Celery

import papayya
import papayya_celery
from papayya import agent
from papayya.agent import Agent
from papayya.runtime import Runtime, get_runtime
from papayya.testing import FakeProvider
from papayya_celery.backend import CeleryBackend
from papayya_celery.worker import agent_of
from tests.conftest import need_service
from tests.reliability.test_celery_kill import _wait

pytestmark = pytest.mark.slow

BROKER = "redis://127.0.0.1:6379/10"  # this file's own database: flushed at the start of each test
AGENT = "earlyack.enrich"
ITEMS = 6
PREFETCH = 4
BOUND = 2  # PAPAYYA_CELERY_UNACKED_SECONDS for the workers

APP = textwrap.dedent(
    """
    import os, time, pathlib
    import openai
    from celery import Celery
    import papayya_celery, papayya_openai
    from papayya import agent

    STATE = pathlib.Path(os.environ["STATE_DIR"])
    LATE = os.environ["ACKS_LATE"] == "1"
    app = Celery("earlyack", broker=os.environ["BROKER"])
    app.conf.update(
        task_default_queue=os.environ["QUEUE"],
        task_acks_late=LATE,
        task_reject_on_worker_lost=LATE,
        worker_prefetch_multiplier=int(os.environ["PREFETCH"]),
    )
    papayya_celery.install(app)
    client = papayya_openai.instrument(
        openai.OpenAI(base_url=os.environ["FAKE_URL"], api_key="test", max_retries=0)
    )

    @app.task(name="earlyack.enrich", acks_late=LATE, reject_on_worker_lost=LATE)
    @agent(name="earlyack.enrich")
    def enrich(item):
        reply = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": item.id}]
        )
        (STATE / f"{item.id}.pid").write_text(str(os.getpid()))
        while (STATE / "hold").exists():  # the first worker is killed while its one process waits here
            time.sleep(0.05)
        time.sleep(float(os.environ["ITEM_SECONDS"]))  # the next worker's prefetched messages wait
        with (STATE / f"{item.id}.runs").open("a") as runs:
            runs.write("completed\\n")
        return {"answer": reply.choices[0].message.content}
    """
)


def _redis() -> Any:
    """A client on this file's Redis database, emptied; skip (laptop) or fail (CI) without Redis."""
    try:
        import redis

        client = redis.Redis.from_url(BROKER, socket_connect_timeout=1)
        client.flushdb()  # this file's database only, never FLUSHALL
    except Exception as exc:  # any failure means: no Redis here
        need_service(f"Redis does not answer at {BROKER} ({exc})")
    return client


def _items(url: str, tenant: str) -> dict[str, dict[str, Any]]:
    with psycopg.connect(url, row_factory=psycopg.rows.dict_row) as conn:
        rows = conn.execute(
            "SELECT i.key, i.status, "
            "(SELECT array_agg(a.status ORDER BY a.number) FROM papayya.attempts a "
            " WHERE a.item_id = i.item_id) AS attempts "
            "FROM papayya.items i WHERE i.tenant_id = %s",
            (tenant,),
        ).fetchall()
    return {r["key"]: r for r in rows}


@pytest.fixture
def workers(
    rt: Runtime, database_url: str, fake: FakeProvider, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[Callable[[], subprocess.Popen[bytes]], Path, Any, Agent]]:
    """Start ``celery worker -P prefork -c 1`` subprocesses on a fresh queue of this file's Redis db; the
    test's runtime publishes to that queue (``PAPAYYA_BACKEND=celery``)."""
    redis_client = _redis()
    late = request.param
    (tmp_path / "earlyack.py").write_text(APP)
    state = tmp_path / "state"
    state.mkdir()
    queue = f"papayya-early-ack-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAPAYYA_")}
    env.update(
        PAPAYYA_DATABASE_URL=database_url,
        PAPAYYA_LEASE_SECONDS="2",
        PAPAYYA_CELERY_UNACKED_SECONDS=str(BOUND),
        BROKER=BROKER,
        QUEUE=queue,
        ACKS_LATE="1" if late else "0",
        PREFETCH=str(PREFETCH),
        ITEM_SECONDS="1",
        STATE_DIR=str(state),
        FAKE_URL=fake.openai_url,
        PYTHONPATH=os.pathsep.join([str(tmp_path), os.getcwd()]),
    )
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Any] = []

    def start() -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "celery", "-A", "earlyack", "worker", "-P", "prefork", "-c", "1"]
        cmd += ["-Q", queue, "-n", f"early{len(procs)}-{uuid.uuid4().hex[:6]}@%h"]
        cmd += ["--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "info"]
        log = open(tmp_path / f"worker-{len(procs)}.log", "wb")  # noqa: SIM115 - closed at teardown
        logs.append(log)
        proc = subprocess.Popen(
            cmd, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        procs.append(proc)
        return proc

    # The publishing side: an app on the same queue with a task of the same name, so the backend
    # publishes each item (its ids in the headers) to the workers' task.
    client = Celery("earlyack-client", broker=BROKER)
    client.conf.update(task_default_queue=queue)
    papayya_celery.install(client)

    @client.task(name=AGENT, shared=False)
    @agent(name=AGENT)
    def enrich(item: papayya.Item) -> None:  # runs only on the workers
        raise AssertionError("the test process never runs an item")

    papayya.configure(backend="celery")
    get_runtime().backend = CeleryBackend(client)
    try:
        yield start, state, redis_client, agent_of(enrich)
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        for log in logs:
            log.close()
        papayya_celery.uninstall(client)
        client.close()
        redis_client.flushdb()
        redis_client.close()


@pytest.mark.parametrize("workers", [False, True], ids=["early-ack", "late-ack"], indirect=True)
def test_messages_prefetched_by_a_worker_killed_whole_are_run_once_each_long_before_the_visibility_timeout(
    workers: Any, database_url: str, fake: FakeProvider, tenant: str
) -> None:
    start, state, redis_client, enrich = workers
    keys = [f"doc-{i}" for i in range(ITEMS)]

    # Given a worker with one process that runs one item (stuck in it) and holds prefetched messages
    first = start()
    (state / "hold").touch()
    enrich.submit([{"id": k} for k in keys], tenant=tenant)
    _wait(lambda: any(state.glob("*.pid")), "an item to reach its hold", first)
    _wait(
        lambda: redis_client.zcard("unacked_index") >= PREFETCH - 1,
        "the worker to prefetch its messages",
        first,
    )
    (running,) = [p.stem for p in state.glob("*.pid")]

    # When the whole worker (main and pool process) is SIGKILLed
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    (state / "hold").unlink()
    items = _items(database_url, tenant)
    assert items[running]["status"] == "running"
    assert all(items[k]["status"] == "queued" for k in keys if k != running)
    assert redis_client.zcard("unacked_index") >= PREFETCH - 1  # taken, unacknowledged: Redis waits an hour

    # Then the next worker runs every item to its end (far below Redis's one-hour visibility timeout)
    second = start()
    _wait(
        lambda: all(r["status"] == "succeeded" for r in _items(database_url, tenant).values()),
        "every item to succeed",
        second,
        timeout=120,
    )
    items = _items(database_url, tenant)
    assert sorted(items) == keys
    for key in keys:
        assert (state / f"{key}.runs").read_text().count("completed") == 1, key  # run to its end once
        expected = ["stalled", "succeeded"] if key == running else ["succeeded"]
        assert items[key]["attempts"] == expected, key
    assert fake.count == ITEMS  # the killed item's recorded call was answered from its journal

    # and none of the messages the next worker held past the bound was taken from it: each task id
    # reached it once (a message put back while held would arrive twice)
    log = (state.parent / "worker-1.log").read_text(errors="replace")
    received = Counter(re.findall(r"Task earlyack\.enrich\[([0-9a-f-]+)\] received", log))
    assert received
    assert max(received.values()) == 1, received
    assert "put back in their queue" in log
