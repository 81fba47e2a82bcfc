"""Celery for test_switch.py: two generic workers (``python -m papayya_celery worker``, 8 threads each)
on Redis at 127.0.0.1:6379, on a queue of their own, running any agent from its run's record."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import need_service

BROKER = "redis://127.0.0.1:6379/14"
CELERY = [sys.executable, "-m", "celery"]
WORKERS = 2


def _redis_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return True
    except OSError:
        return False


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # warm shutdown
    deadline = time.monotonic() + 20
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def workers(env: dict[str, str], cwd: Path) -> Iterator[dict[str, str]]:
    if not _redis_answers():
        need_service("Redis does not answer on 127.0.0.1:6379")
    queue = f"papayya-switch-{uuid.uuid4().hex[:8]}"
    extra = {"PAPAYYA_CELERY_BROKER": BROKER, "PAPAYYA_CELERY_QUEUE": queue}
    worker_env = {**env, **extra}
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        for i in range(WORKERS):
            log = (cwd / f"celery-worker-{i}.log").open("wb")
            logs.append(log)
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "papayya_celery",
                        "worker",
                        "-c",
                        "8",
                        "-n",
                        f"switch{i}-{os.getpid()}@%h",
                        "-l",
                        "WARNING",
                        "--without-gossip",
                        "--without-mingle",
                        "--without-heartbeat",
                    ],
                    cwd=cwd,
                    env=worker_env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        time.sleep(0.5)
        for i, proc in enumerate(procs):
            assert proc.poll() is None, (cwd / f"celery-worker-{i}.log").read_text()[-3000:]
        yield extra
    finally:
        _stop(procs)
        for log in logs:
            log.close()


def fresh_redis(url: str, *, flush: bool = True) -> None:
    """Check Redis answers at ``url`` (and empty that database when ``flush``), or skip (laptop) / fail
    (CI). A test on a queue of its own does not flush: it must not wipe another run's messages."""
    try:
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=1)
        if flush:
            client.flushdb()
        else:
            client.ping()
    except Exception as exc:  # any failure means: no Redis here
        need_service(f"Redis does not answer at {url} ({exc})")


@contextlib.contextmanager
def celery_worker(app: str, env: dict[str, str], cwd: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``celery -A APP worker`` (4 threads) started in ``cwd``, as a team starts one; stopped warm."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*CELERY, "-A", app, "worker", "--pool", "threads", "-c", "4", "-l", "info", "--without-gossip"],
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc
        finally:
            _stop([proc])
