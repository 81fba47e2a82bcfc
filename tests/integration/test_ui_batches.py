"""The dashboard's provider batches (``/batches``, ``/api/batches``) over a real batch-mode run: its JSON
is ``papayya batches list|show --json``, its pages list the batches and link a batch to its runs, and a
tenant token, which would see other tenants' requests in them, is refused.

The run (also used by the browser test in tests/acceptance/test_ui.py): three items submitted in batch
mode, run by a worker in this process until each waits for its LLM call, then sent by one round of the
batcher as one OpenAI batch that papayya's FakeProvider holds open.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest

import papayya
import papayya_openai
from papayya import agent, batches, engine
from papayya.runtime import Runtime, get_runtime
from papayya.testing import FakeProvider
from tests.integration.test_ui_api import cli_json, client

pytest.importorskip("starlette", reason="the ui extra is not installed: pip install 'papayya[ui]'")

from papayya.ui.auth import load_tokens

MODEL = "gpt-4o-mini"
ITEMS = 3


@dataclass
class OpenBatch:
    tenant: str
    run_id: uuid.UUID
    batch_id: str  # papayya's
    provider_batch_id: str


@pytest.fixture
def batch_mode(rt: Runtime, fake: FakeProvider, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Requests leave at once, and only when this test runs a round of the batcher (the worker's own
    batcher thread waits an hour); this process has the provider's key. Afterwards the provider ends
    what it holds and the batcher reads it, so no batch is left open on a provider that is gone."""
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    monkeypatch.setattr("papayya.engine.worker.BATCH_TICK", 3600.0)
    papayya.configure(batch_window_seconds=0)
    yield
    fake.release_batches()
    rt = get_runtime()
    batches.tick(rt, force=True)  # what is still pending leaves too
    ours = {b.id for b in fake.batches}
    deadline = time.monotonic() + 30
    while any(b["status"] in ("forming", "submitted") for b in _of(rt, ours)):
        assert time.monotonic() < deadline, "the batcher did not read the released batches within 30s"
        time.sleep(0.2)  # the provider's batches are polled from a second after they are sent
        batches.tick(rt)
        ours = {b.id for b in fake.batches}


def _of(rt: Runtime, provider_ids: set[str]) -> list[dict[str, Any]]:
    return [b for b in batches.list_batches(rt, limit=1000) if b["provider_batch_id"] in provider_ids]


def work(agent_: Any, run_id: uuid.UUID) -> None:
    """Run the run's items in a worker of this process until none is ready (they wait for batches)."""
    worker = engine.Worker(get_runtime(), [agent_], concurrency=4, run_ids=[run_id], poll=0.1, burst=True)
    runner = threading.Thread(target=worker.run, daemon=True)
    runner.start()
    runner.join(60)
    if runner.is_alive():
        worker.stop()
        runner.join(30)
        raise AssertionError(f"the worker did not finish run {run_id} within 60s")


@pytest.fixture
def oa(fake: FakeProvider) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fake.openai_url, api_key="test", max_retries=0) as c:
        yield papayya_openai.instrument(c)


def open_batch(tenant: str, fake: FakeProvider, oa: openai.OpenAI) -> OpenBatch:
    """A batch-mode run whose items wait on one provider batch, sent and held open by the provider."""
    fake.hold_batches()

    @agent(name=f"ui.batch_label.{tenant}")  # its own name: a burst worker waits on every item of its agents
    def label(item: papayya.Item) -> dict[str, Any]:
        reply = oa.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": item.input["text"]}], max_tokens=20
        )
        return {"label": reply.choices[0].message.content}

    handle = label.submit(
        [{"id": f"doc-{i}", "text": f"document {i}"} for i in range(ITEMS)], tenant=tenant, llm_mode="batch"
    )
    work(label, handle.run_id)
    assert batches.tick(get_runtime(), force=True).formed >= 1
    [sent] = fake.batches
    [row] = [b for b in batches.list_batches(get_runtime()) if b["provider_batch_id"] == sent.id]
    return OpenBatch(tenant, handle.run_id, str(row["batch_id"]), sent.id)


@pytest.fixture
def held(batch_mode: None, tenant: str, fake: FakeProvider, oa: openai.OpenAI) -> OpenBatch:
    return open_batch(tenant, fake, oa)


def test_the_batches_json_is_the_cli_json(held: OpenBatch, capsys: pytest.CaptureFixture[str]) -> None:
    c = client()
    listed = c.get("/api/batches")
    assert listed.status_code == 200
    document = listed.json()
    assert document == cli_json("batches", "list", capsys=capsys)
    assert set(document) == {"batches", "pending"}
    mine = next(b for b in document["batches"] if b["batch_id"] == held.batch_id)
    assert (mine["provider"], mine["model"], mine["provider_batch_id"]) == (
        "openai",
        MODEL,
        held.provider_batch_id,
    )
    assert (mine["status"], mine["rows"], mine["answered"], mine["failed"], mine["open"]) == (
        "submitted",
        ITEMS,
        0,
        0,
        ITEMS,
    )
    assert float(mine["charged_usd"]) > 0  # the open rows' worst case, still charged
    assert c.get("/api/batches?limit=1").json() == cli_json("batches", "list", "--limit", "1", capsys=capsys)

    shown = c.get(f"/api/batches/{held.batch_id}").json()
    assert shown == cli_json("batches", "show", held.batch_id, capsys=capsys)
    assert shown["runs"] == [
        {
            "tenant_id": held.tenant,
            "run_id": str(held.run_id),
            "requests": ITEMS,
            "open": ITEMS,
            "answered": 0,
            "failed": 0,
        }
    ]
    missing = c.get(f"/api/batches/{uuid.uuid4()}")
    assert missing.status_code == 404
    assert "is not a provider batch" in missing.json()["error"]
    assert c.get("/api/batches?limit=0").status_code == 400


def test_the_pages_list_the_batches_and_link_a_batch_to_its_runs(held: OpenBatch) -> None:
    c = client()
    page = c.get("/batches")
    assert page.status_code == 200
    assert '<a href="/batches">Batches</a>' in page.text  # in the navigation
    assert f'href="/batches/{held.batch_id}"' in page.text
    assert held.batch_id[:8] in page.text
    assert held.provider_batch_id in page.text
    assert "submitted" in page.text
    assert 'id="pending"' in page.text  # the pending line, as the CLI prints it under its table
    detail = c.get(f"/batches/{held.batch_id}")
    assert detail.status_code == 200
    assert held.provider_batch_id in detail.text
    assert f'href="/runs/{held.run_id}"' in detail.text
    assert f"{ITEMS}: answered 0, failed 0, open {ITEMS}" in detail.text
    assert c.get(f"/batches/{uuid.uuid4()}").status_code == 404


def test_pending_requests_are_listed_before_a_batch_is_sent(
    batch_mode: None, tenant: str, fake: FakeProvider, oa: openai.OpenAI
) -> None:
    fake.hold_batches()

    @agent(name=f"ui.batch_pending.{tenant}")
    def ask(item: papayya.Item) -> dict[str, Any]:
        oa.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=5)
        return {}

    handle = ask.submit([{"id": "a"}], tenant=tenant, llm_mode="batch")
    work(ask, handle.run_id)
    document = client().get("/api/batches").json()
    assert any(p["model"] == MODEL and p["pending"] >= 1 for p in document["pending"])
    assert f"Pending, not sent yet: openai/{MODEL} " in client().get("/batches").text


def test_a_tenant_token_cannot_see_batches_of_every_tenant(held: OpenBatch) -> None:
    tokens = load_tokens("admin-secret", tenant_tokens=f"{held.tenant}:mine")
    c = client(tokens)
    admin = {"authorization": "Bearer admin-secret"}
    mine = {"authorization": "Bearer mine"}
    assert c.get("/api/batches").status_code == 401
    assert c.get("/api/batches", headers=admin).status_code == 200
    assert c.get(f"/api/batches/{held.batch_id}", headers=admin).status_code == 200
    # Even a batch carrying only its own tenant's requests: the list and the pending counts mix tenants.
    for path in ("/api/batches", f"/api/batches/{held.batch_id}"):
        refused = c.get(path, headers=mine)
        assert refused.status_code == 403
        assert "a tenant token cannot see them" in refused.json()["error"]
    for path in ("/batches", f"/batches/{held.batch_id}"):
        refused = c.get(path, headers=mine)
        assert refused.status_code == 403
        assert "a tenant token cannot see them" in refused.text
    runs = c.get("/runs", headers=mine)
    assert runs.status_code == 200
    assert 'href="/batches"' not in runs.text  # no link in a tenant's navigation
