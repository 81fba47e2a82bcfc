"""``papayya batches`` and a batch-mode run's ``runs show``, from the command line.

A run in batch mode is submitted in-process with papayya's FakeProvider holding its batches open, its
items run by a worker until they wait for their LLM call; then the CLI (a subprocess on the same
database, with the provider's key) sends the batch, lists and shows it, reads its answers, and says
what the run waits on and what batch mode saved.
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import openai
import pytest

import papayya
import papayya_openai
from papayya import agent, engine
from papayya.runtime import Runtime, get_runtime
from papayya.testing import FakeProvider
from tests.acceptance.test_cli import assert_one_sentence, ok_json, ok_text, papayya_all
from tests.acceptance.test_cli import papayya as cli

MODEL = "gpt-4o-mini"
ITEMS = 3


@pytest.fixture
def env(cli_env: dict[str, str], rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """This process sends batches at once and runs no batcher of its own (the CLI is the batcher); the
    CLI has the providers' keys, and backs off briefly from a batch it cannot reach."""
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    monkeypatch.setattr("papayya.engine.worker.BATCH_TICK", 3600.0)
    papayya.configure(batch_window_seconds=0)
    keys = {"OPENAI_API_KEY": "test", "ANTHROPIC_API_KEY": "test", "PAPAYYA_BATCH_POLL_SECONDS": "0.2"}
    return {**cli_env, **keys}


@pytest.fixture
def oa(fake: FakeProvider) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fake.openai_url, api_key="test", max_retries=0) as c:
        yield papayya_openai.instrument(c)


def waiting_run(tenant: str, oa: openai.OpenAI) -> tuple[Any, str]:
    """A batch-mode run whose items all wait for their one LLM call (nothing sent yet): (agent, run id)."""

    @agent(name="cli.batch_label")
    def label(item):
        reply = oa.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": item.input["text"]}], max_tokens=20
        )
        return {"label": reply.choices[0].message.content}

    handle = label.submit(
        [{"id": f"doc-{i}", "text": f"document {i}"} for i in range(ITEMS)], tenant=tenant, llm_mode="batch"
    )
    work(label, handle.run_id, burst=True)
    return label, str(handle.run_id)


def work(agent_: Any, run_id: Any, **how: bool) -> None:
    worker = engine.Worker(get_runtime(), [agent_], concurrency=4, run_ids=[run_id], poll=0.1, **how)
    runner = threading.Thread(target=worker.run, daemon=True)
    runner.start()
    runner.join(60)
    if runner.is_alive():
        worker.stop()
        runner.join(30)
        raise AssertionError(f"the worker did not finish run {run_id} within 60s")


def poll_until_answered(env: dict[str, str], sig: signal.Signals) -> tuple[list[dict[str, Any]], int, str]:
    """Run ``papayya batches poll --json`` until a round answers requests, then send it ``sig``: the
    rounds it printed, its exit code and its stderr."""
    rounds: list[dict[str, Any]] = []
    with subprocess.Popen(
        [sys.executable, "-m", "papayya", "batches", "poll", "--interval", "0.2", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.put(line)
            lines.put(None)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            while not any(r["answered"] for r in rounds):
                line = lines.get(timeout=60)
                assert line is not None, "papayya batches poll exited"
                rounds.append(json.loads(line))
            proc.send_signal(sig)
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            reader.join(10)
        err = proc.stderr.read()
    return rounds, code, err


def test_a_batch_is_sent_listed_shown_and_read_and_runs_show_says_what_the_run_waits_on(
    env: dict[str, str], tenant: str, fake: FakeProvider, oa: openai.OpenAI
) -> None:
    fake.hold_batches()
    label, run_id = waiting_run(tenant, oa)

    # Given every item waiting for its call, nothing sent yet
    shown, text = papayya_all(env, ["runs", "show", run_id, "--json"], ["runs", "show", run_id])
    detail = ok_json(shown)
    assert detail["counts"]["waiting"] == ITEMS
    assert detail["batch"] == {
        "waiting": ITEMS,
        "open_batches": 0,
        "pending": ITEMS,
        "batch_calls": 0,
        "batch_cost_usd": "0",
        "live_cost_usd": "0",
        "saved_usd": "0",
    }
    text_out = ok_text(text)
    assert f"waiting {ITEMS}" in text_out
    assert f"{ITEMS} waiting on 0 provider batches, {ITEMS} pending; batch calls: 0\n" in text_out
    listed = ok_json(cli(env, "batches", "list", "--json"))
    assert {"provider": "openai", "model": MODEL}.items() <= next(
        p for p in listed["pending"] if p["model"] == MODEL
    ).items()
    assert next(p for p in listed["pending"] if p["model"] == MODEL)["pending"] >= ITEMS

    # When one round of the batcher runs, sending what is pending now (the window ignored)
    code, out, err = cli(env, "batches", "poll", "--once", "--force", "--json")
    assert code == 0, err
    assert json.loads(out)["formed"] >= 1
    assert "Traceback" not in err

    # Then the run's requests are one provider batch, open (the provider holds it)
    [batch] = fake.batches
    listed_json, listed_text, by_provider, runs_text = papayya_all(
        env,
        ["batches", "list", "--json"],
        ["batches", "list"],
        ["batches", "show", batch.id, "--json"],
        ["runs", "show", run_id],
    )
    mine = next(b for b in ok_json(listed_json)["batches"] if b["provider_batch_id"] == batch.id)
    assert (mine["provider"], mine["model"], mine["status"]) == ("openai", MODEL, "submitted")
    assert (mine["rows"], mine["answered"], mine["failed"], mine["open"]) == (ITEMS, 0, 0, ITEMS)
    assert Decimal(mine["charged_usd"]) > 0  # the worst case of the open rows, still charged
    table = ok_text(listed_text)
    assert mine["batch_id"][:8] in table
    assert batch.id in table
    full = ok_json(by_provider)
    assert full["batch_id"] == mine["batch_id"]
    assert full["runs"] == [
        {"tenant_id": tenant, "run_id": run_id, "requests": ITEMS, "open": ITEMS, "answered": 0, "failed": 0}
    ]
    assert f"{ITEMS} waiting on 1 provider batch, 0 pending" in ok_text(runs_text)
    # and papayya's id, whole or its first 8 characters, names it too
    by_short, by_uuid = papayya_all(
        env, ["batches", "show", mine["batch_id"][:8]], ["batches", "show", mine["batch_id"], "--json"]
    )
    short_text = ok_text(by_short)
    assert batch.id in short_text
    assert run_id in short_text
    assert ok_json(by_uuid)["provider_batch_id"] == batch.id

    # When the provider finishes the batch and the batcher runs until a round reads it, then Ctrl-C
    fake.release_batches()
    rounds, code, err = poll_until_answered(env, signal.SIGINT)

    # Then it answered every row and woke every item, and stopped cleanly
    assert sum(r["answered"] for r in rounds) == ITEMS
    assert sum(r["woken"] for r in rounds) == ITEMS
    assert code == 0, err
    assert "stopped after" in err
    assert "Traceback" not in err
    # and the run says what its batch calls cost, and what they would have cost live
    after = ok_json(cli(env, "runs", "show", run_id, "--json"))["batch"]
    assert (after["waiting"], after["open_batches"], after["pending"], after["batch_calls"]) == (
        0,
        0,
        0,
        ITEMS,
    )
    assert Decimal(after["batch_cost_usd"]) == fake.billed_usd
    assert Decimal(after["live_cost_usd"]) > Decimal(after["batch_cost_usd"])
    assert Decimal(after["saved_usd"]) == Decimal(after["live_cost_usd"]) - Decimal(after["batch_cost_usd"])
    ended = ok_json(cli(env, "batches", "show", batch.id, "--json"))
    assert (ended["status"], ended["answered"], ended["open"], ended["charged_usd"]) == (
        "ended",
        ITEMS,
        0,
        "0",
    )

    # and the items, back in the queue, finish from the journal without paying again
    work(label, uuid.UUID(run_id), until_done=True)
    final, final_text = papayya_all(env, ["runs", "show", run_id, "--json"], ["runs", "show", run_id])
    assert ok_json(final)["counts"]["succeeded"] == ITEMS
    batch_line = next(line for line in ok_text(final_text).splitlines() if line.startswith("batch "))
    assert batch_line.split(None, 1)[1].startswith(f"batch calls: {ITEMS}, cost $")
    assert "(live would have been $" in batch_line
    assert len(fake.bill) == ITEMS


def test_a_batch_id_that_names_nothing_is_one_sentence(env: dict[str, str]) -> None:
    nothing, no_uuid, as_json = papayya_all(
        env,
        ["batches", "show", "batch_nope"],
        ["batches", "show", str(uuid.uuid4())],
        ["batches", "show", "batch_nope", "--json"],
    )
    assert_one_sentence(nothing, "'batch_nope' is not a provider batch", "papayya batches list")
    assert_one_sentence(no_uuid, "is not a provider batch")
    code, out, err = as_json
    assert (code, out) == (2, "")
    assert json.loads(err) == {"error": json.loads(err)["error"], "exit_code": 2}
    assert "papayya batches list" in json.loads(err)["error"]


def test_a_run_without_batch_mode_has_no_batch_line(env: dict[str, str], tenant: str) -> None:
    @agent(name="cli.live_only")
    def live(item):
        return {"ok": True}

    result = live.map([{"id": "a"}], tenant=tenant)
    detail, text = papayya_all(
        env, ["runs", "show", str(result.run_id), "--json"], ["runs", "show", str(result.run_id)]
    )
    assert ok_json(detail)["batch"] is None
    assert "provider batch" not in ok_text(text)
