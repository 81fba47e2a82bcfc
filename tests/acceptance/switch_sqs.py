"""The sqs backend for tests/acceptance/test_switch.py: a moto SQS server in its own process, a queue with a
dead-letter queue, and two ``python -m papayya_sqs --any-agent`` consumers (processes that run any agent
from its run's record, here the example's ``enrich`` imported from its script file).

moto answers some tens to a hundred requests a second, so the consumers receive in batches of ten, run
ten items at once each, and long-poll for a second only (a stop is quick; an idle poll is cheap).
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from tests.conftest import need_service

CONSUMERS = 2
CONCURRENCY = 10
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def _wait_for(what: str, ready: Any, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start within {timeout:g}s:\n{_tail(log)}")
        time.sleep(0.1)


def _make_queue(endpoint: str) -> str:
    """A standard queue whose RedrivePolicy sends a message to its DLQ after five receives."""
    import boto3

    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1", **_credentials())
    dlq = sqs.create_queue(QueueName="tenant-batch-dlq")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": 5})
    attrs = {"VisibilityTimeout": "30", "RedrivePolicy": policy}
    return str(sqs.create_queue(QueueName="tenant-batch", Attributes=attrs)["QueueUrl"])


def _credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": AWS_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        "aws_session_token": AWS_ENV["AWS_SESSION_TOKEN"],
    }


def _answers(endpoint: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1):
            return True
    except OSError:
        return False


def _stop(proc: subprocess.Popen[bytes], timeout: float) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@contextlib.contextmanager
def workers(env: dict[str, str], cwd: Path) -> Iterator[dict[str, str]]:
    """A moto server, a queue with its DLQ and two generic consumers; yields the example's SQS settings."""
    try:
        import boto3  # noqa: F401
        import moto.server
    except ImportError:
        need_service("boto3 and moto[server] are not installed (pip install 'papayya[dev]')")
    base = {k: v for k, v in env.items() if not k.startswith("AWS_")}
    base.update(AWS_ENV)
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[IO[bytes]] = []

    def start(cmd: list[str], log: Path, extra: dict[str, str]) -> subprocess.Popen[bytes]:
        out = open(log, "wb")  # noqa: SIM115 - closed on exit
        logs.append(out)
        proc = subprocess.Popen(
            cmd, env={**base, **extra}, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        procs.append(proc)
        return proc

    try:
        port = _free_port()
        endpoint = f"http://127.0.0.1:{port}"
        moto_log = cwd / "moto.log"
        moto = start([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], moto_log, {})
        _wait_for("the moto server", lambda: _answers(endpoint), moto, moto_log)
        settings = {
            "PAPAYYA_SQS_QUEUE_URL": _make_queue(endpoint),
            "PAPAYYA_SQS_ENDPOINT_URL": endpoint,
            **AWS_ENV,
        }
        command = [sys.executable, "-m", "papayya_sqs", "--any-agent", "--wait-seconds", "1"]
        command += ["--concurrency", str(CONCURRENCY), "--grace", "5"]
        for n in range(CONSUMERS):
            log = cwd / f"consumer-{n}.log"
            proc = start(command, log, settings)
            _wait_for(f"consumer {n}", lambda log=log: b"consuming" in log.read_bytes(), proc, log)
        yield settings
        for n, proc in enumerate(procs[1:]):
            if proc.poll() is not None:
                raise RuntimeError(
                    f"consumer {n} exited early ({proc.returncode}):\n{_tail(cwd / f'consumer-{n}.log')}"
                )
    finally:
        for proc in reversed(procs):  # the consumers first (they drain), the moto server last
            _stop(proc, timeout=15)
        for out in logs:
            out.close()


__all__ = ["workers"]
