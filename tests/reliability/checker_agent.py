"""The workload of the invariant checker (``tests.reliability.checker``): one agent and its provider.

Every figure here follows from the seed and the item's key alone, so an undisturbed run of a seed is
the reference a disturbed one must match:

- ``plan_of(seed, key)`` says how many paid LLM calls an item makes (one or two) and how it ends:
  ``ok`` (succeeded), ``truncated`` (its last answer is cut at ``max_tokens``: degraded with
  ``llm_stop_reason``), ``thin`` (degraded by ``run.degrade``), ``fails`` (a ``ValueError`` after its
  calls: failed, never retried) or ``flaky`` (a ``papayya.Retryable`` on its first attempt, after its
  first call: succeeded on the retry, which gets that call back from the journal).
- ``reply`` is the fake provider's answer to each prompt, with a latency that ``scale`` stretches
  (the checker sets it to zero for the reference run, and to a mean of a fraction of a second while
  it disturbs the workers, so calls are in flight when it strikes).

The worker processes import this module (``papayya worker tests.reliability.checker_agent:enrich``);
they read the seed, the agent's name and the provider's URL from ``CHECKER_SEED``, ``CHECKER_AGENT``
and ``CHECKER_FAKE_URL``, and in batch mode the batchers' lease on a provider batch from
``CHECKER_BATCH_LEASE``. The checker imports it for ``plan_of``, ``expected_status`` and ``reply``.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import openai

import papayya
import papayya_openai
from papayya import run
from papayya.testing import FakeRequest, Reply

MODEL = "gpt-4o-mini"
MAX_TOKENS = 40  # every call caps its output, so a reservation is never below the call's cost
RETRIES = 2
PID_HEADER = "X-Checker-Pid"  # which worker process sent a request (the checker's in-flight count)
KINDS = (("ok", 70), ("truncated", 8), ("thin", 7), ("fails", 5), ("flaky", 10))
LONG_MARK = "[write at length]"

SEED = int(os.environ.get("CHECKER_SEED", "0"))
NAME = os.environ.get("CHECKER_AGENT", "checker-enrich")

if os.environ.get("CHECKER_BATCH_LEASE"):
    # A batcher's hold on a provider batch follows lease_seconds (papayya.batches.LEASE_SECONDS
    # overrides it): the checker may set it apart from the items' lease (--batch-lease), so that a kill
    # is recovered from, and a freeze outlasts the lease, within a seed.
    from papayya import batches

    batches.LEASE_SECONDS = float(os.environ["CHECKER_BATCH_LEASE"])


@dataclass(frozen=True)
class Plan:
    """What one item does: ``calls`` paid LLM calls, then ends as ``kind`` says."""

    calls: int
    kind: str


def _draw(seed: int, key: str, what: str) -> int:
    digest = hashlib.blake2b(f"{seed}:{key}:{what}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def plan_of(seed: int, key: str) -> Plan:
    """The item's plan: a pure function of the seed and its key."""
    bounds = list(itertools.accumulate(weight for _, weight in KINDS))
    kind = KINDS[bisect.bisect_right(bounds, _draw(seed, key, "kind") % bounds[-1])][0]
    return Plan(calls=1 + _draw(seed, key, "calls") % 2, kind=kind)


def expected_status(plan: Plan) -> str:
    """The outcome an item of this plan has in an undisturbed run."""
    return {"truncated": "degraded", "thin": "degraded", "fails": "failed"}.get(plan.kind, "succeeded")


def prompt_of(seed: int, key: str, step: int, plan: Plan) -> str:
    """The user message of the item's ``step``-th call (the last one of a truncated item asks for a lot)."""
    text = f"seed {seed}: enrich record {key}, part {step + 1} of {plan.calls}"
    if plan.kind == "truncated" and step == plan.calls - 1:
        text += f" {LONG_MARK}"
    return text


def reply(scale: Callable[[], float]) -> Callable[[FakeRequest], Reply]:
    """The fake provider's ``reply`` hook: a deterministic answer after ``scale()`` x 0.5-1.5 seconds."""

    def answer(request: FakeRequest) -> Reply:
        message = request.last_user_message
        factor = 0.5 + (_draw(0, message, "latency") % 1000) / 1000
        time.sleep(scale() * factor)
        if LONG_MARK in message:  # longer than MAX_TOKENS: the fake cuts it and stops with "length"
            return Reply(" ".join(f"{message} (detail {n})" for n in range(12)))
        return Reply(f"noted: {message}")

    return answer


_client: openai.OpenAI | None = None
_client_lock = threading.Lock()


def _openai() -> openai.OpenAI:
    global _client
    with _client_lock:
        if _client is None:
            base = os.environ.get("CHECKER_FAKE_URL", "http://127.0.0.1:9/v1")
            _client = papayya_openai.instrument(
                openai.OpenAI(base_url=base, api_key="checker", max_retries=0)
            )
        return _client


def _ask(text: str) -> str:
    answer = _openai().chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": text}],
        max_tokens=MAX_TOKENS,
        extra_headers={PID_HEADER: str(os.getpid())},
    )
    return answer.choices[0].message.content or ""


@papayya.agent(name=NAME, retries=RETRIES, backoff=0)
def enrich(item: Any) -> dict[str, Any]:
    """One to two paid calls, then the ending the item's plan says."""
    plan = plan_of(SEED, item.id)
    answers = []
    for step in range(plan.calls):
        answers.append(_ask(prompt_of(SEED, item.id, step, plan)))
        if plan.kind == "flaky" and run.attempt == 1:
            raise papayya.Retryable(f"record {item.id!r} hit a transient fault")
    if plan.kind == "fails":
        raise ValueError(f"record {item.id!r} cannot be enriched")
    if plan.kind == "thin":
        run.degrade("thin_context", path="answers", message="too little context")
    return {"key": item.id, "answers": answers}
