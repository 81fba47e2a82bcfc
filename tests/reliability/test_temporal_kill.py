"""A Temporal worker SIGKILLed mid-activity: Temporal retries after the heartbeat timeout, and the
item ends terminal with the lost attempt kept as ``stalled``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

import papayya
from papayya.runtime import Runtime, get_runtime
from tests.integration.test_temporal_env import TemporalHarness, temporal

__all__ = ["temporal"]

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]

WORKER = textwrap.dedent(
    """
    import asyncio, concurrent.futures, os
    from pathlib import Path

    from temporalio import activity
    from temporalio.client import Client
    from temporalio.worker import Worker

    import papayya_temporal
    from papayya import agent


    @activity.defn
    @agent
    async def long_enrich(item):
        if activity.info().attempt == 1:
            Path(os.environ["KILL_MARK"]).write_text(str(os.getpid()))
            await asyncio.sleep(300)  # killed here
        return {"id": item.id, "temporal_attempt": activity.info().attempt}


    async def serve():
        client = await Client.connect(
            os.environ["PAPAYYA_TEMPORAL_ADDRESS"], interceptors=[papayya_temporal.Interceptor()]
        )
        worker = Worker(
            client,
            task_queue=os.environ["PAPAYYA_TEMPORAL_TASK_QUEUE"],
            workflows=[papayya_temporal.MapItems],
            activities=[long_enrich],
            activity_executor=concurrent.futures.ThreadPoolExecutor(4),
        )
        await worker.run()
    """
)


def _worker(env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", "import asyncio, kill_agents; asyncio.run(kill_agents.serve())"],
        env=env,
        cwd=cwd,
    )


def test_a_worker_killed_mid_activity_is_a_stalled_attempt_and_the_item_still_ends(
    rt: Runtime,
    database_url: str,
    temporal: TemporalHarness,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a worker process running the agent, with short leases and heartbeat timeouts
    (tmp_path / "kill_agents.py").write_text(WORKER)
    monkeypatch.syspath_prepend(str(tmp_path))
    queue = f"papayya-kill-{uuid.uuid4().hex[:8]}"
    mark = tmp_path / "started"
    settings = {
        "PAPAYYA_TEMPORAL_ADDRESS": temporal.address,
        "PAPAYYA_TEMPORAL_TASK_QUEUE": queue,
        "PAPAYYA_TEMPORAL_HEARTBEAT_TIMEOUT": "2",
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    papayya.configure(backend="temporal", lease_seconds=2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAPAYYA_")}
    env.update(settings)
    env.update(
        PAPAYYA_DATABASE_URL=database_url,
        PAPAYYA_LEASE_SECONDS="2",
        KILL_MARK=str(mark),
        PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO)]),
    )
    import kill_agents

    tenant = f"kill-{uuid.uuid4().hex[:6]}"
    first = _worker(env, tmp_path)
    second: subprocess.Popen[bytes] | None = None
    outcome: dict[str, Any] = {}

    def batch() -> None:
        try:
            outcome["result"] = kill_agents.long_enrich.map([{"id": "acme.com"}], tenant=tenant)
        except BaseException as exc:
            outcome["error"] = exc

    runner = threading.Thread(target=batch, daemon=True)
    runner.start()
    try:
        # When the worker is killed while the activity runs
        deadline = time.monotonic() + 90
        while not mark.exists():
            assert first.poll() is None, "the worker exited before the activity started"
            assert time.monotonic() < deadline, "the activity never started"
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        # and another worker takes over
        second = _worker(env, tmp_path)
        runner.join(timeout=180)
        assert not runner.is_alive(), "the run did not end after the worker was replaced"
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    assert "error" not in outcome, outcome.get("error")

    # Then the item ended, and the killed worker's attempt is kept as stalled
    result = outcome["result"]
    assert result.counts == {"succeeded": 1, "degraded": 0, "failed": 0}
    with psycopg.connect(get_runtime().store.url) as conn:
        rows = conn.execute(
            "SELECT a.number, a.status, a.backend FROM papayya.attempts a WHERE a.tenant_id = %s "
            "ORDER BY a.number",
            (tenant,),
        ).fetchall()
        (stalls,) = conn.execute(
            "SELECT stalls FROM papayya.items WHERE tenant_id = %s", (tenant,)
        ).fetchone()
    assert rows == [(1, "stalled", "temporal"), (2, "succeeded", "temporal")]
    assert stalls == 1
    (item,) = result.items()
    assert get_runtime().store.item_detail(item.item_id)["output"]["temporal_attempt"] >= 2


def test_items_refused_by_workers_on_another_database_end_map_with_the_cause(
    rt: Runtime,
    database_url: str,
    temporal: TemporalHarness,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the only worker of the task queue on another papayya database (a deployment mistake)
    other = f"papayya_other_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{other}"')
    info = psycopg.conninfo.conninfo_to_dict(database_url)
    info["dbname"] = other
    other_url = psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in info.items() if v is not None})
    (tmp_path / "kill_agents.py").write_text(WORKER)
    monkeypatch.syspath_prepend(str(tmp_path))
    queue = f"papayya-other-db-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("PAPAYYA_TEMPORAL_ADDRESS", temporal.address)
    monkeypatch.setenv("PAPAYYA_TEMPORAL_TASK_QUEUE", queue)
    papayya.configure(backend="temporal")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAPAYYA_")}
    env.update(
        PAPAYYA_TEMPORAL_ADDRESS=temporal.address,
        PAPAYYA_TEMPORAL_TASK_QUEUE=queue,
        PAPAYYA_DATABASE_URL=other_url,
        KILL_MARK=str(tmp_path / "never"),
        PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO)]),
    )
    import kill_agents

    from papayya_temporal.config import TemporalError

    worker = _worker(env, tmp_path)
    outcome: dict[str, Any] = {}

    def batch() -> None:
        try:
            outcome["result"] = kill_agents.long_enrich.map(
                [{"id": f"d{n}.com"} for n in range(3)], tenant=f"other-{uuid.uuid4().hex[:6]}"
            )
        except BaseException as exc:
            outcome["error"] = exc

    runner = threading.Thread(target=batch, daemon=True)
    runner.start()
    try:
        # When map() runs its items there
        runner.join(timeout=180)
        assert not runner.is_alive(), "map() still waits for items its workers refused"
    finally:
        worker.kill()
        worker.wait(timeout=10)
        papayya.reset()
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{other}" WITH (FORCE)')
    # Then map() ends with one sentence naming the cause, and nothing ran
    error = outcome.get("error")
    assert isinstance(error, TemporalError), outcome
    assert "refused" in str(error)
    assert "PAPAYYA_DATABASE_URL" in str(error)
    assert not (tmp_path / "never").exists()
