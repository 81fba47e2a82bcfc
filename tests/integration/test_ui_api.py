"""The dashboard's application on a real store, without a browser: its JSON is the CLI's ``--json``, its
pages render what the store holds, its buttons pause, resume (for the workers) and replay through the
Python API, and its tokens keep each tenant to its own items.

The seeded store (also used by the browser tests in tests/acceptance/test_ui.py): one tenant with a
finished run of twelve items (succeeded, degraded as low confidence, degraded by a tool returning None,
failed with a ValueError) and a paused run of four queued items; a second tenant with a run of its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import pytest

import papayya
from papayya import agent, control, run
from papayya.cli import main as cli_main
from papayya.runtime import Runtime

pytest.importorskip("starlette", reason="the ui extra is not installed: pip install 'papayya[ui]'")
pytest.importorskip("httpx", reason="httpx drives the dashboard's application in these tests")

from starlette.testclient import TestClient

from papayya.ui.app import create_app
from papayya.ui.auth import Tokens, load_tokens

FIXED = threading.Event()  # the user's fix for the items degraded by an empty lookup


def fake_llm(*, prompt: str) -> dict[str, Any]:
    return {
        "model": "gpt-4o-mini",
        "usage": {"prompt_tokens": 40, "completion_tokens": 12},
        "choices": [{"finish_reason": "stop", "message": {"content": prompt.upper()}}],
    }


@agent(name="ui-enrich")
def enrich(item: papayya.Item) -> Any:
    n = int(item.id[1:])
    reply = run.llm("answer", provider="openai", model="gpt-4o-mini", max_tokens=20)(
        fake_llm, prompt=f"about {item.id}"
    )
    text = reply["choices"][0]["message"]["content"]
    if n % 6 == 5:
        raise ValueError(f"cannot parse the reply for item {item.id!r}")
    if n % 4 == 1 and not FIXED.is_set():
        run.tool("lookup")(lambda: None)
    if n % 4 == 2:
        run.degrade("low_confidence", path="summary", message="the model was unsure")
    return {"id": item.id, "summary": text, "fixed": FIXED.is_set()}


@dataclass
class Seeded:
    tenant: str
    other: str
    done: UUID  # finished: 12 items, every outcome
    paused: UUID  # paused by hand, 4 items queued
    theirs: UUID  # the other tenant's run


def seed(tenant: str) -> Seeded:
    FIXED.clear()
    papayya.tenants.add(tenant, exist_ok=True)
    papayya.tenants.set_budget(tenant, "5", "month")
    done = enrich.map([{"id": f"i{n:02d}", "title": f"title {n}"} for n in range(12)], tenant=tenant)
    handle = enrich.submit([{"id": f"p{n:02d}", "title": f"later {n}"} for n in range(4)], tenant=tenant)
    control.pause(handle.run_id, reason="waiting for the new prompt")
    other = f"{tenant}-other"
    theirs = enrich.map([{"id": "i01", "title": "theirs"}], tenant=other)
    return Seeded(tenant, other, done.run_id, handle.run_id, theirs.run_id)


@pytest.fixture
def seeded(rt: Runtime, tenant: str) -> Seeded:
    return seed(tenant)


def client(tokens: Tokens | None = None) -> TestClient:
    return TestClient(create_app(tokens), base_url="http://127.0.0.1:8177")


def cli_json(*args: str, capsys: pytest.CaptureFixture[str]) -> Any:
    """What ``papayya ARGS --json`` prints, run in this process on the same store."""
    capsys.readouterr()
    assert cli_main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def csrf_of(app_client: TestClient) -> str:
    tokens: Tokens = app_client.app.state.tokens  # type: ignore[attr-defined]
    return tokens.csrf


# -- JSON: the CLI's documents ----------------------------------------------------------------------


def test_json_endpoints_are_the_cli_json(seeded: Seeded, capsys: pytest.CaptureFixture[str]) -> None:
    c = client()
    run_id = str(seeded.done)
    assert c.get(f"/api/runs/{run_id}").json() == cli_json("runs", "show", run_id, capsys=capsys)
    assert c.get(f"/api/runs/{run_id}/items?limit=5").json() == cli_json(
        "items", "list", run_id, "--limit", "5", capsys=capsys
    )
    assert c.get(f"/api/runs/{run_id}/failures").json() == cli_json("failures", run_id, capsys=capsys)
    assert c.get(f"/api/tenants/{seeded.tenant}").json() == cli_json(
        "tenants", "show", seeded.tenant, capsys=capsys
    )
    mine = c.get(f"/api/runs?tenant={seeded.tenant}").json()
    assert mine == cli_json("runs", "list", "--tenant", seeded.tenant, capsys=capsys)
    item_id = mine[-1]["run_id"]  # the oldest: the finished run
    assert item_id == run_id
    first = c.get(f"/api/runs/{run_id}/items?limit=1").json()["items"][0]["item_id"]
    assert c.get(f"/api/items/{first}").json() == cli_json("items", "show", first, capsys=capsys)
    tenants = {t["tenant"]: t for t in c.get("/api/tenants").json()}
    cli_tenants = {t["tenant"]: t for t in cli_json("tenants", "list", capsys=capsys)}
    assert tenants[seeded.tenant] == cli_tenants[seeded.tenant]


def test_the_run_json_counts_outcomes_and_cost(seeded: Seeded) -> None:
    detail = client().get(f"/api/runs/{seeded.done}").json()
    assert detail["status"] == "completed"
    assert detail["total"] == 12
    assert detail["counts"] == {"succeeded": 5, "degraded": 5, "failed": 2}
    assert detail["llm_calls"] == 12
    assert float(detail["cost_usd"]) > 0
    assert {c["outcome"] for c in detail["clusters"]} == {"degraded", "failed"}


def test_runs_page_through_with_a_cursor(seeded: Seeded) -> None:
    c = client()
    first = c.get(f"/api/runs?tenant={seeded.tenant}&limit=1")
    assert len(first.json()) == 1
    assert first.json()[0]["run_id"] == str(seeded.paused)  # newest first
    link = first.headers["link"]
    assert 'rel="next"' in link
    second = c.get(link.split(">")[0].lstrip("<"))
    assert [r["run_id"] for r in second.json()] == [str(seeded.done)]
    assert "link" not in second.headers


def test_tenant_spend_over_time(seeded: Seeded) -> None:
    spend = client().get(f"/api/tenants/{seeded.tenant}/spend").json()
    assert spend["period"] == "month"
    assert spend["budget_usd"] == "5"
    assert sum(b["calls"] for b in spend["daily"]) == 12
    assert float(spend["spent_usd"]) == pytest.approx(sum(float(b["cost_usd"]) for b in spend["buckets"]))


# -- pages ----------------------------------------------------------------------------------------


def test_every_page_renders_what_the_store_holds(seeded: Seeded) -> None:
    c = client()
    runs = c.get("/runs")
    assert runs.status_code == 200
    assert str(seeded.done)[:8] in runs.text
    assert str(seeded.paused)[:8] in runs.text
    page = c.get(f"/runs/{seeded.done}")
    assert page.status_code == 200
    assert "low_confidence" in page.text
    assert "ValueError" in page.text
    assert "openai/gpt-4o-mini" in page.text
    assert "Replay the degraded slice (5)" in page.text
    tenants = c.get("/tenants")
    assert seeded.tenant in tenants.text
    assert "1 paused" in tenants.text
    tenant = c.get(f"/tenants/{seeded.tenant}")
    assert "<svg" in tenant.text
    assert "budget $5.00" in tenant.text
    assert "waiting for the new prompt" in tenant.text
    item = c.get(f"/runs/{seeded.done}/key/i05", follow_redirects=True)
    assert item.status_code == 200
    assert "ValueError" in item.text
    assert "cannot parse the reply" in item.text
    assert c.get(f"/runs/{uuid.uuid4()}").status_code == 404


def test_user_text_is_escaped(rt: Runtime, tenant: str) -> None:
    evil = f"{tenant}<script>alert(1)</script>"
    papayya.tenants.add(evil)
    page = client().get("/tenants")
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;" in page.text


# -- buttons --------------------------------------------------------------------------------------


def test_replay_a_cluster_creates_a_queued_run_for_the_workers(seeded: Seeded) -> None:
    c = client()
    clusters = c.get(f"/api/runs/{seeded.done}/failures").json()
    tool = next(x for x in clusters if "tool_returned_none" in x["label"])
    answer = c.post(
        f"/runs/{seeded.done}/replay",
        data={"cluster": tool["cluster"], "csrf": csrf_of(c)},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    new_run = answer.headers["location"].split("?")[0].rsplit("/", 1)[1]
    detail = c.get(f"/api/runs/{new_run}").json()
    assert detail["replayed_from"] == str(seeded.done)
    assert detail["total"] == tool["items"]
    assert detail["counts"] == {"queued": tool["items"], "succeeded": 0, "degraded": 0, "failed": 0}
    # A worker (here: this process) runs it with the fix; the original run shows what the replay fixed.
    FIXED.set()
    control.resume_run(new_run, agent=enrich)
    replays = c.get(f"/api/runs/{seeded.done}").json()["replays"]
    assert replays[0]["transitions"] == {"degraded->succeeded": tool["items"]}


def test_an_empty_or_foreign_replay_is_refused_with_a_sentence(seeded: Seeded) -> None:
    c = client()
    answer = c.post(f"/api/runs/{seeded.done}/replay", json={"outcome": "cancelled"})
    assert answer.status_code == 400
    assert "is empty; nothing was created" in answer.json()["error"]
    assert c.post(f"/api/runs/{seeded.done}/replay", json={"cluster": "nope"}).status_code == 404


def test_pause_and_resume_for_the_workers(seeded: Seeded) -> None:
    c = client()
    resumed = c.post(f"/api/runs/{seeded.paused}/resume", json={})
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["status"] == "running"
    assert resumed.json()["counts"]["queued"] == 4  # waiting for `papayya worker`
    again = c.post(f"/api/runs/{seeded.paused}/resume", json={})
    assert again.status_code == 400
    assert "is running, not paused" in again.json()["error"]
    paused = c.post(f"/api/runs/{seeded.paused}/pause", json={"reason": "by hand"})
    assert paused.json()["status"] == "paused"
    assert paused.json()["paused_reason"] == "manual: by hand"


def test_a_spent_budget_refuses_resume_until_it_is_raised(seeded: Seeded) -> None:
    c = client()
    lowered = c.post(f"/api/tenants/{seeded.tenant}/budget", json={"budget": "0.000001"})
    assert lowered.status_code == 200
    assert lowered.json()["budget"]["budget_usd"] == "0.000001"
    refused = c.post(f"/api/runs/{seeded.paused}/resume", json={})
    assert refused.status_code == 400
    assert "raise it" in refused.json()["error"]
    raised = c.post(
        f"/tenants/{seeded.tenant}/budget",
        data={"budget": "50", "period": "month", "csrf": csrf_of(c)},
        follow_redirects=False,
    )
    assert raised.status_code == 303
    assert papayya.tenants.get(seeded.tenant).budget_usd == 50
    assert c.post(f"/api/runs/{seeded.paused}/resume", json={}).json()["status"] == "running"
    capped = c.post(f"/api/tenants/{seeded.tenant}/max-running", json={"max_running": 3})
    assert capped.json()["max_running"] == 3


def test_a_form_without_the_secret_or_from_elsewhere_changes_nothing(seeded: Seeded) -> None:
    c = client()
    assert c.post(f"/runs/{seeded.paused}/resume", data={}).status_code == 403
    assert c.post(f"/runs/{seeded.paused}/resume", data={"csrf": "stale"}).status_code == 403
    foreign = c.post(
        f"/runs/{seeded.paused}/resume",
        data={"csrf": csrf_of(c)},
        headers={"origin": "http://evil.example"},
    )
    assert foreign.status_code == 403
    assert c.get(f"/api/runs/{seeded.paused}").json()["status"] == "paused"
    # A page on another host name pointed at 127.0.0.1 (DNS rebinding) is not answered.
    assert c.get("/runs", headers={"host": "evil.example:8177"}).status_code == 400


# -- tokens ---------------------------------------------------------------------------------------


def test_tokens_admin_and_tenant_scoped(seeded: Seeded) -> None:
    tokens = load_tokens("admin-secret", tenant_tokens=f"{seeded.tenant}:mine,{seeded.other}:theirs")
    c = client(tokens)
    assert c.get("/api/runs").status_code == 401
    assert c.get("/runs").status_code == 401  # the token form
    assert c.get("/api/runs", headers={"authorization": "Bearer wrong"}).status_code == 401
    admin = {"authorization": "Bearer admin-secret"}
    assert len(c.get("/api/tenants", headers=admin).json()) >= 2
    mine = {"authorization": "Bearer mine"}
    # A tenant token sees its own runs, items and tenant...
    runs = c.get("/api/runs", headers=mine).json()
    assert {r["tenant"] for r in runs} == {seeded.tenant}
    assert [t["tenant"] for t in c.get("/api/tenants", headers=mine).json()] == [seeded.tenant]
    theirs_item = c.get(f"/api/runs/{seeded.theirs}/items", headers=admin).json()["items"][0]["item_id"]
    own_item = c.get(f"/api/runs/{seeded.done}/items?limit=1", headers=mine).json()["items"][0]["item_id"]
    assert c.get(f"/api/items/{own_item}", headers=mine).status_code == 200
    assert c.get(f"/items/{own_item}", headers=mine).status_code == 200
    # ...and nothing of another tenant's: its runs and items are not found (the database holds a
    # tenant token's connections to its tenant: no existence leak), its tenant is refused by name.
    assert c.get(f"/items/{theirs_item}", headers=mine).status_code == 404
    assert c.get(f"/api/items/{theirs_item}", headers=mine).status_code == 404
    assert c.get(f"/api/tenants/{seeded.other}", headers=mine).status_code == 403
    assert c.get(f"/tenants/{seeded.other}", headers=mine).status_code == 403
    assert c.get(f"/api/runs?tenant={seeded.other}", headers=mine).status_code == 403
    assert c.get(f"/api/runs/{seeded.theirs}", headers=mine).status_code == 404
    assert c.post(
        f"/api/runs/{seeded.theirs}/replay", headers=mine, json={"outcome": "succeeded"}
    ).status_code in (
        403,
        404,
    )
    # A tenant token does not set budgets.
    assert (
        c.post(f"/api/tenants/{seeded.tenant}/budget", headers=mine, json={"budget": "1000"}).status_code
        == 403
    )


def test_a_browser_keeps_the_token_in_a_cookie(seeded: Seeded) -> None:
    c = client(load_tokens(None, tenant_tokens=f"{seeded.tenant}:mine"))
    first = c.get("/runs?token=mine&status=paused", follow_redirects=False)
    assert first.status_code == 303
    assert first.headers["location"] == "/runs?status=paused"  # the token leaves the address bar
    assert "httponly" in first.headers["set-cookie"].lower()
    assert c.get("/runs?status=paused").status_code == 200
    assert c.get(f"/tenants/{seeded.other}").status_code == 403


def test_tenant_tokens_are_checked_when_read(tmp_path: Any) -> None:
    from papayya.errors import ConfigError

    with pytest.raises(ConfigError, match="tenant:token"):
        load_tokens(None, tenant_tokens="no-colon-here")
    with pytest.raises(ConfigError, match="two tenants"):
        load_tokens(None, tenant_tokens="a:same,b:same")
    f = tmp_path / "tokens"
    f.write_text("# tenants\nacme:one\nglobex:two\n")
    assert load_tokens(None, tenant_tokens_file=f).tenants == {"one": "acme", "two": "globex"}


# -- the command ----------------------------------------------------------------------------------


def test_the_command_refuses_a_public_address_without_a_token(rt: Runtime) -> None:
    env = {"PATH": "/usr/bin:/bin", "PAPAYYA_DATABASE_URL": rt.settings.database_url or ""}
    done = subprocess.run(
        [sys.executable, "-m", "papayya", "ui", "--host", "0.0.0.0"],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "without a token" in done.stderr
    assert "PAPAYYA_UI_TOKEN" in done.stderr


def test_the_core_imports_without_the_ui_extra() -> None:
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('starlette', 'uvicorn', 'jinja2'):\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import papayya, papayya.cli\n"
        "sys.exit(papayya.cli.main(['ui']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert "pip install 'papayya[ui]'" in done.stderr
    assert done.stderr.count("\n") == 1


@pytest.fixture(autouse=True)
def _fixed_off() -> Iterator[None]:
    yield
    FIXED.clear()
