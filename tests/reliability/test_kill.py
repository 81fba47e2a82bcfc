"""A process killed mid-run loses nothing already recorded: every item is still in exactly one state."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import psycopg

import papayya
from papayya.runtime import Runtime

SCRIPT = textwrap.dedent(
    """
    import sys, time
    import papayya
    from papayya import agent

    @agent
    def slow(item):
        time.sleep(0.05)
        return {"id": item.id}

    if __name__ == "__main__":
        slow.map([{"id": f"i{n:03d}"} for n in range(200)], tenant=sys.argv[1], concurrency=4)
    """
)


def _statuses(url: str, tenant: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT status, count(*) FROM papayya.items WHERE tenant_id = %s GROUP BY status", (tenant,)
        ).fetchall()
    return dict(rows)


def test_sigkill_mid_run_leaves_every_item_accounted_for(
    rt: Runtime, database_url: str, tmp_path: Path
) -> None:
    tenant = f"kill-{uuid.uuid4().hex[:6]}"
    script = tmp_path / "batch.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAPAYYA_")}
    env["PAPAYYA_DATABASE_URL"] = database_url
    env["PAPAYYA_LEASE_SECONDS"] = "1"  # so the killed worker's leases expire within the test
    proc = subprocess.Popen([sys.executable, str(script), tenant], env=env, cwd=tmp_path)
    try:
        # Given a run well under way
        deadline = time.monotonic() + 60
        while _statuses(database_url, tenant).get("succeeded", 0) < 20:
            assert proc.poll() is None, "the batch ended before it could be killed"
            assert time.monotonic() < deadline, "the batch made no progress"
            time.sleep(0.05)
        # When its process is killed without warning
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    # Then all 200 items are still recorded, each in one state; the ones in flight hold a lease
    statuses = _statuses(database_url, tenant)
    assert sum(statuses.values()) == 200
    assert set(statuses) <= {"queued", "running", "succeeded"}
    assert statuses.get("running", 0) <= 4
    assert statuses["succeeded"] >= 20
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE lease_expires_at IS NULL OR lease_token IS NULL), "
            "count(*) FILTER (WHERE output IS NULL) FROM papayya.items WHERE tenant_id = %s "
            "AND status IN ('running', 'succeeded') AND (status = 'running' OR output IS NULL)",
            (tenant,),
        ).fetchone()
    assert row is not None
    unleased_running, succeeded_without_output = row[0], row[1] - statuses.get("running", 0)
    assert unleased_running == 0
    assert succeeded_without_output == 0
    # (of the running items, those whose attempt had begun: the rest were claimed and still waiting for
    # a thread, and go back to the queue without counting as having lost their worker)
    with psycopg.connect(database_url) as conn:
        begun = conn.execute(
            "SELECT count(*) FROM papayya.items i WHERE i.tenant_id = %s AND i.status = 'running' "
            "AND EXISTS (SELECT 1 FROM papayya.attempts a WHERE a.item_id = i.item_id "
            "AND a.lease_token = i.lease_token AND a.status = 'running')",
            (tenant,),
        ).fetchone()
    assert begun is not None

    # When its leases have expired, the orphaned run is resumed
    time.sleep(1.5)
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT run_id FROM papayya.runs WHERE tenant_id = %s", (tenant,)).fetchone()
    assert row is not None
    result = papayya.resume_run(row[0])

    # Then every item finished, and the attempts the killed process had begun are marked stalled
    assert result.status == "completed"
    assert result.counts["succeeded"] == 200
    with psycopg.connect(database_url) as conn:
        stalled = conn.execute(
            "SELECT count(*) FROM papayya.attempts a JOIN papayya.items i USING (item_id) "
            "WHERE i.tenant_id = %s AND a.status = 'stalled'",
            (tenant,),
        ).fetchone()
    assert stalled is not None
    assert stalled[0] == begun[0]
