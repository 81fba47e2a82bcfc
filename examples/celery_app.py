"""An existing Celery app, made accountable by three lines (marked ``# papayya``; ``run`` is optional).

Start a worker, then send it work (Redis by default; set ``CELERY_BROKER_URL`` for another broker,
``PAPAYYA_DATABASE_URL`` for a shared PostgreSQL — worker and sender must use the same one)::

    celery -A examples.celery_app worker -l info            # terminal 1
    PAPAYYA_BACKEND=celery python -m examples.celery_app      # terminal 2: a run of 20 items, waited on

``python -m examples.celery_app --delay`` sends the same items the way the team's code always has
(``enrich.delay(...)``) with a tenant; each becomes an item of the tenant's intake run for the day.
Then ``papayya runs list``, ``papayya items list RUN``, ``papayya failures RUN``.

The "LLM" is a simulation (no network): most items succeed, a few come back without a summary
(degraded) and a few raise (failed, clustered by fingerprint).
"""

from __future__ import annotations

import hashlib
import os
import sys
from typing import Any

from celery import Celery

import papayya_celery  # papayya
from papayya import agent, run  # papayya (run: only to flag a degraded output)

app = Celery("enrich", broker=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1)
papayya_celery.install(app)  # papayya


def _roll(key: str) -> float:
    return int(hashlib.blake2b(key.encode(), digest_size=4).hexdigest(), 16) / 2**32


def simulated_llm(text: str) -> str:
    """Stand-in for a model call: deterministic per input."""
    roll = _roll(text)
    if roll < 0.05:
        raise TimeoutError("the model did not answer in time")
    return "" if roll < 0.12 else f"summary of {text}"


# Explicit names: the same whether this module is imported by the worker or run as __main__.
@app.task(name="enrich", acks_late=True)
@agent(name="enrich", retries=1, backoff=0.5)  # papayya
def enrich(item: Any) -> dict[str, Any]:
    """Summarise one document (the task the team already had)."""
    summary = simulated_llm(item["text"])
    if not summary:
        run.degrade("the model returned an empty summary", path="summary")
        return {"summary": None}
    return {"summary": summary, "words": len(summary.split())}


ITEMS = [{"id": f"doc-{n:03d}", "text": f"document {n}"} for n in range(20)]


def main(argv: list[str]) -> None:
    tenant = os.environ.get("TENANT", "t47")
    if "--delay" in argv:
        with papayya_celery.tenant(tenant):
            for item in ITEMS:
                enrich.apply_async((item,), headers=papayya_celery.headers(tenant, key=item["id"]))
        print(f"sent {len(ITEMS)} messages for tenant {tenant}; see them with `papayya runs list`")
        return
    result = enrich.map(ITEMS, tenant=tenant)
    print(result)


if __name__ == "__main__":
    main(sys.argv[1:])
