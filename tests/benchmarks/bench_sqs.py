"""What ``papayya_sqs.Consumer`` costs per message, run on demand (not part of the test suite):

    python tests/benchmarks/bench_sqs.py [--smoke]    # embedded PostgreSQL under a temp dir
    PAPAYYA_DATABASE_URL=postgresql://... python tests/benchmarks/bench_sqs.py

A moto SQS server in its own process (so it does not share the consumers' interpreter), the real
boto3 client, and one consumer at a time on a pre-filled queue, taking turns in the same run:

- the baseline: bare boto3 loops (receive 10, call the function on each parsed body, delete the
  batch with ``delete_message_batch``) in as many threads as papayya's consumer has (``BENCH_CONCURRENCY``,
  default 10), each until its receive finds the queue empty;
- ``papayya_sqs.Consumer`` (batch receive of 10, 10 threads): each message is an attempt of an item of
  a recorded run (its ids in attributes: validate the batch, claim, call, judge and write the attempt,
  delete in batches).

The function is a no-op. Rounds are small (``BENCH_MESSAGES``, default 500) because moto's own cost
per call grows with the queue's depth; both consumers pay it alike. Throughput is messages per second
from the first receive to the first empty receive after the queue is drained (short polls, so neither
waits out a long poll at the end); the added time per message is the difference of the two wall times
per message. ``--smoke`` runs one tiny round (CI: it still runs; the figures mean nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

from machine import configure_store, machine_line  # beside this file (run as a script)

import papayya
import papayya_sqs
from papayya import agent
from papayya.execute import ItemRef
from papayya.runtime import get_runtime
from papayya_sqs.queue import Queue

N = int(os.environ.get("BENCH_MESSAGES", "500"))
REPEAT = int(os.environ.get("BENCH_REPEAT", "3"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "10"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError("the moto server did not start") from None
            time.sleep(0.1)
    return proc, f"http://127.0.0.1:{port}"


@agent(name="bench.sqs.noop")
def noop(item: Any) -> dict[str, bool]:
    return {"ok": True}


def fresh_queue(sqs: Any) -> str:
    return str(
        sqs.create_queue(QueueName=f"bench-{uuid.uuid4().hex[:10]}", Attributes={"VisibilityTimeout": "60"})[
            "QueueUrl"
        ]
    )


def fill_plain(sqs: Any, url: str) -> None:
    """The same ids-only messages papayya sends, for the baseline to parse and delete."""
    refs = [ItemRef(uuid.uuid4(), f"i{i:06d}", uuid.uuid4(), "bench") for i in range(N)]
    Queue(url, sqs, fair=False).send(refs)


def fill_papayya(sqs: Any, url: str) -> None:
    rt = get_runtime()
    tenant = f"bench-{uuid.uuid4().hex[:6]}"
    papayya.tenants.add(tenant)
    run_id = uuid.uuid4()
    rows = [(uuid.uuid4(), f"i{i:06d}", "{}") for i in range(N)]
    rt.store.run_create(
        run_id=run_id,
        tenant_id=tenant,
        agent_name=noop.name,
        name="bench",
        backend="sqs",
        items=rows,
        max_attempts=1,
        options={},
    )
    Queue(url, sqs).send([ItemRef(r[0], r[1], run_id, tenant) for r in rows])


def bare_loop(sqs: Any, url: str) -> float:
    """The baseline consumer: CONCURRENCY threads of the bare loop; its wall time in seconds."""
    seen: set[str] = set()  # SQS delivers at least once (moto too, to concurrent receives)
    errors: list[BaseException] = []

    def loop() -> None:
        try:
            while True:
                msgs = sqs.receive_message(
                    QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, MessageAttributeNames=["All"]
                ).get("Messages", [])
                if not msgs:
                    break
                for m in msgs:
                    noop.fn(json.loads(m["Body"]))
                sqs.delete_message_batch(
                    QueueUrl=url,
                    Entries=[{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(msgs)],
                )
                seen.update(m["MessageId"] for m in msgs)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(CONCURRENCY)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    done = len(seen)
    if done != N:
        raise RuntimeError(f"the bare loop handled {done} of {N} messages")
    return elapsed


def papayya_consumer(sqs: Any, url: str) -> float:
    consumer = papayya_sqs.Consumer(
        url, agent=noop, sqs=sqs, concurrency=CONCURRENCY, wait_seconds=0, reaper=False
    )
    start = time.perf_counter()
    stats = consumer.run(burst=True)
    elapsed = time.perf_counter() - start
    if stats.succeeded != N:
        raise RuntimeError(f"the papayya consumer ran {stats.succeeded} of {N} messages: {stats}")
    return elapsed


def main() -> None:
    global N, REPEAT
    import boto3

    parser = argparse.ArgumentParser(description="What papayya_sqs.Consumer costs per message.")
    parser.add_argument("--smoke", action="store_true", help="one tiny round (CI): figures meaningless")
    smoke = parser.parse_args().smoke
    if smoke:
        N, REPEAT = 20, 1

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    store = configure_store()
    print(machine_line(store))
    moto, endpoint = start_moto()
    try:
        sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")
        print(
            f"SQS: moto server (own process); {N} no-op messages per round, batch receive of 10; "
            f"both consumers: {CONCURRENCY} threads; {REPEAT} rounds each, taking turns; median of rounds"
            + ("; SMOKE RUN: tiny sizes, the figures mean nothing" if smoke else "")
            + "\n"
        )
        times: dict[str, list[float]] = {"bare boto3 loops": [], "papayya_sqs.Consumer": []}
        for _ in range(REPEAT):
            url = fresh_queue(sqs)
            fill_plain(sqs, url)
            times["bare boto3 loops"].append(bare_loop(sqs, url))
            url = fresh_queue(sqs)
            fill_papayya(sqs, url)
            times["papayya_sqs.Consumer"].append(papayya_consumer(sqs, url))
        base = statistics.median(times["bare boto3 loops"])
        print(f"{'consumer':<24}{'msgs/s':>10}{'ratio':>8}{'per msg':>11}{'added/msg':>12}")
        for label, rounds in times.items():
            wall = statistics.median(rounds)
            print(
                f"{label:<24}{N / wall:>10,.0f}{base / wall:>8.2f}{wall / N * 1000:>9.2f}ms"
                f"{(wall - base) / N * 1000:>10.2f}ms"
            )
    finally:
        moto.terminate()
        moto.wait(timeout=30)


if __name__ == "__main__":
    main()
