"""The ``papayya`` command line, run the way a user runs it: ``python -m papayya`` in a subprocess.

Runs are seeded in-process through ``agent(...).map(...)`` on the session database (the ``rt``
fixture), then read back through the CLI pointed at the same database by PAPAYYA_DATABASE_URL.
Independent CLI calls of a test run side by side to keep the suite fast.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

from papayya import Item, RunResult, agent, run
from papayya.migrate import available
from papayya.runtime import Runtime

# Unique per session: other tests use the same odd names on the shared session database.
_SUFFIX = uuid.uuid4().hex[:6]
SQL_TENANT = f"t'; DROP TABLE papayya.items; --{_SUFFIX}"
UNICODE_TENANT = f"テナント-ü-{_SUFFIX}"

Result = tuple[int, str, str]


def papayya(env: dict[str, str], *args: str, **overrides: str) -> Result:
    """Run ``papayya ARGS`` and return (exit code, stdout, stderr)."""
    proc = subprocess.run(
        [sys.executable, "-m", "papayya", *args],
        env={**env, **overrides},
        capture_output=True,
        timeout=120,
        check=False,
    )
    return proc.returncode, proc.stdout.decode("utf-8"), proc.stderr.decode("utf-8")


def papayya_all(env: dict[str, str], *commands: Sequence[str]) -> list[Result]:
    """Run several independent commands at once; results in the order given."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda args: papayya(env, *args), commands))


def ok_json(result: Result) -> Any:
    code, out, err = result
    assert code == 0, err
    return json.loads(out)


def ok_text(result: Result) -> str:
    code, out, err = result
    assert code == 0, err
    assert err == ""
    return out


def assert_one_sentence(result: Result, *fragments: str) -> str:
    """The command was refused (exit 2) with one line on stderr, nothing on stdout, no traceback."""
    code, out, err = result
    assert (code, out) == (2, ""), (code, out, err)
    lines = err.splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("papayya: "), line
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in line, line
    return line


def seed_run(tenant: str) -> RunResult:
    """A run with every outcome: two succeeded (one with an unpriced call), one degraded, one failed."""

    def parse(item: Item) -> str:
        return str(item["body"])

    @agent(name="cli.enrich")
    def enrich(item: Item) -> dict[str, str]:
        run.record_llm_call(
            provider="openai", model="gpt-4o-mini", input_tokens=1000, output_tokens=200, stop_reason="stop"
        )
        if item.id == "d-unpriced":
            run.record_llm_call(provider="acme-llm", model="mystery-1", input_tokens=10, output_tokens=5)
        run.step("normalise")(lambda: {"id": item.id})
        if item.id == "b-degraded":
            run.degrade("low_confidence", path="summary", message="the model was unsure")
        return {"body": parse(item)}

    items = [
        {"id": "a-ok", "body": "fine"},
        {"id": "b-degraded", "body": "meh"},
        {"id": "c-failed"},
        {"id": "d-unpriced", "body": "fine"},
    ]
    result = enrich.map(items, tenant=tenant)
    assert result.counts == {"succeeded": 2, "degraded": 1, "failed": 1}
    return result


def test_migrate_applies_pending_migrations_and_prints_the_version(cli_env: dict[str, str]) -> None:
    latest = available()[-1].version

    text = ok_text(papayya(cli_env, "migrate"))
    report = ok_json(papayya(cli_env, "migrate", "--json"))

    assert f"version {latest}" in text
    assert report == {"version": latest, "applied": []}  # the first call left nothing pending


def test_tenants_add_set_show_list_with_a_negotiated_price(
    rt: Runtime, tenant: str, cli_env: dict[str, str]
) -> None:
    ok_text(papayya(cli_env, "tenants", "add", tenant, "--config", "tier=gold", "--config", "max_items=500"))
    assert_one_sentence(papayya(cli_env, "tenants", "add", tenant), "already exists", "papayya tenants set")

    changed = papayya(
        cli_env,
        *("tenants", "set", tenant, "--config", "tier=platinum", "--unset", "max_items"),
        *("--price", "openai:gpt-4o-mini=0.10/0.40/0.05"),
    )
    assert tenant in ok_text(changed)
    shown, text, listed = papayya_all(
        cli_env,
        ["tenants", "show", tenant, "--json"],
        ["tenants", "show", tenant],
        ["tenants", "list", "--json"],
    )

    detail = ok_json(shown)
    assert detail["config"] == {"tier": "platinum"}
    assert detail["prices"] == [
        {
            "provider": "openai",
            "model": "gpt-4o-mini",
            "input_mtok": "0.1",
            "output_mtok": "0.4",
            "cache_read_mtok": "0.05",
            "cache_write_mtok": None,
        }
    ]
    assert (detail["runs"], detail["llm_calls"], detail["cost_usd"]) == (0, 0, "0")
    out = ok_text(text)
    for fragment in ("platinum", "openai/gpt-4o-mini", "0.05", "public"):
        assert fragment in out
    assert tenant in [t["tenant"] for t in ok_json(listed)]

    # The negotiated price is what the next run pays: 1M input at 0.10 + 1M output at 0.40.
    @agent
    def priced(item: Item) -> str:
        run.record_llm_call(
            provider="openai", model="gpt-4o-mini", input_tokens=1_000_000, output_tokens=1_000_000
        )
        return "done"

    result = priced.map([{"id": "one"}], tenant=tenant)
    item_id = result.items()[0].item_id
    shown, item = papayya_all(
        cli_env, ["tenants", "show", tenant, "--json"], ["items", "show", str(item_id), "--json"]
    )
    detail = ok_json(shown)
    assert (detail["runs"], detail["llm_calls"], detail["cost_usd"]) == (1, 1, "0.5")
    call = ok_json(item)["llm_calls"][0]
    assert (call["price_source"], call["cost_usd"]) == ("tenant", "0.5")


def test_runs_and_items_show_what_happened_to_each_item(
    rt: Runtime, tenant: str, cli_env: dict[str, str]
) -> None:
    result = seed_run(tenant)
    run_id = str(result.run_id)
    failed = next(i for i in result.items() if i.key == "c-failed")

    (
        runs_json,
        runs_text,
        show_json,
        show_text,
        items_json,
        failed_text,
        page,
        item_json,
        item_text,
        by_key,
    ) = papayya_all(
        cli_env,
        ["runs", "list", "--tenant", tenant, "--json"],
        ["runs", "list", "--limit", "5"],
        ["runs", "show", run_id, "--json"],
        ["runs", "show", run_id],
        ["items", "list", run_id, "--json"],
        ["items", "list", run_id, "--outcome", "failed"],
        ["items", "list", run_id, "--limit", "2", "--json"],
        ["items", "show", str(failed.item_id), "--json"],
        ["items", "show", str(failed.item_id), "--traceback"],
        ["items", "show", "--run", run_id, "b-degraded"],
    )

    # runs list
    (row,) = ok_json(runs_json)
    assert row["run_id"] == run_id
    assert (row["tenant"], row["agent"], row["status"], row["total"], row["done"]) == (
        tenant,
        "cli.enrich",
        "completed",
        4,
        4,
    )
    assert row["counts"] == {"succeeded": 2, "degraded": 1, "failed": 1}
    assert (row["llm_calls"], row["unpriced_calls"]) == (5, 1)
    assert Decimal(row["cost_usd"]) > 0
    assert run_id in ok_text(runs_text)

    # runs show
    summary = ok_json(show_json)
    assert summary["counts"] == {"succeeded": 2, "degraded": 1, "failed": 1}
    assert summary["top_reasons"] == [
        {"code": "low_confidence", "path": "summary", "items": 1, "sample_keys": ["b-degraded"]}
    ]
    (failure,) = summary["top_failures"]
    assert (failure["type"], failure["frame"], failure["category"], failure["sample_keys"]) == (
        "KeyError",
        "test_cli.py:parse",
        "user",
        ["c-failed"],
    )
    models = {m["model"]: m for m in summary["cost_by_model"]}
    assert models["mystery-1"]["cost_usd"] is None  # unknown, never "0"
    assert models["mystery-1"]["unpriced_calls"] == 1
    assert Decimal(models["gpt-4o-mini"]["cost_usd"]) == Decimal(summary["cost_usd"]) > 0
    text = ok_text(show_text)
    for fragment in ("low_confidence", "KeyError", "test_cli.py:parse", "acme-llm/mystery-1", "unknown"):
        assert fragment in text
    assert "$0.00 " not in text

    # items list
    listing = ok_json(items_json)
    assert [(i["key"], i["status"]) for i in listing["items"]] == [
        ("a-ok", "succeeded"),
        ("b-degraded", "degraded"),
        ("c-failed", "failed"),
        ("d-unpriced", "succeeded"),
    ]
    assert listing["next_after"] is None
    degraded = listing["items"][1]
    assert [(r["code"], r["path"]) for r in degraded["reasons"]] == [("low_confidence", "summary")]
    assert listing["items"][2]["error_type"] == "KeyError"
    assert listing["items"][3]["cost_unknown"] is True
    text = ok_text(failed_text)
    assert "c-failed" in text
    assert "KeyError" in text
    assert "a-ok" not in text
    first = ok_json(page)
    assert [i["key"] for i in first["items"]] == ["a-ok", "b-degraded"]
    rest = ok_json(papayya(cli_env, "items", "list", run_id, "--after", first["next_after"], "--json"))
    assert [i["key"] for i in rest["items"]] == ["c-failed", "d-unpriced"]

    # items show: input, attempts with the error, journal steps, LLM calls
    detail = ok_json(item_json)
    assert (detail["key"], detail["status"], detail["tenant"], detail["input"]) == (
        "c-failed",
        "failed",
        tenant,
        {"id": "c-failed"},
    )
    (attempt,) = detail["attempts"]
    assert attempt["number"] == 1
    assert attempt["status"] == "failed"
    assert (attempt["error"]["type"], attempt["error"]["frame"]) == ("KeyError", "test_cli.py:parse")
    assert [(s["step_key"], s["attempt"]) for s in detail["steps"]] == [("step:normalise#1", 1)]
    (call,) = detail["llm_calls"]
    assert (call["model"], call["input_tokens"], call["stop_reason"], call["price_source"]) == (
        "gpt-4o-mini",
        1000,
        "stop",
        "catalog",
    )
    assert Decimal(call["cost_usd"]) > 0
    text = ok_text(item_text)
    for fragment in ("attempt 1: failed", "KeyError", "test_cli.py:parse", "step:normalise#1", "Traceback"):
        assert fragment in text
    text = ok_text(by_key)
    assert "b-degraded" in text
    assert "low_confidence: summary" in text
    assert "the model was unsure" in text


def test_costs_by_tenant_run_model_and_agent(rt: Runtime, tenant: str, cli_env: dict[str, str]) -> None:
    result = seed_run(tenant)
    scoped = ("--tenant", tenant, "--json")

    by_tenant, by_run, by_model, by_agent, text = papayya_all(
        cli_env,
        ["costs", *scoped],
        ["costs", "--by", "run", *scoped],
        ["costs", "--by", "model", *scoped],
        ["costs", "--by", "agent", "--since", "24h", "--until", "2999-01-01", *scoped],
        ["costs", "--by", "model", "--tenant", tenant],
    )

    report = ok_json(by_tenant)
    assert (report["by"], report["tenant"], report["until"]) == ("tenant", tenant, None)  # the defaults
    (row,) = report["rows"]
    assert (row["key"], row["calls"], row["unpriced_calls"]) == (tenant, 5, 1)
    assert Decimal(row["cost_usd"]) == result.cost_usd
    assert report["total"]["cost_usd"] == row["cost_usd"]
    assert [r["key"] for r in ok_json(by_run)["rows"]] == [str(result.run_id)]
    models = {r["key"]: r for r in ok_json(by_model)["rows"]}
    assert models["acme-llm/mystery-1"]["cost_usd"] is None  # unknown, never "0"
    assert Decimal(models["openai/gpt-4o-mini"]["cost_usd"]) == result.cost_usd
    by_agent_report = ok_json(by_agent)
    assert [r["key"] for r in by_agent_report["rows"]] == ["cli.enrich"]
    assert by_agent_report["until"].startswith("2999-01-01T00:00:00")
    out = ok_text(text)
    assert "acme-llm/mystery-1" in out
    assert "unknown" in out
    assert "total" in out


def test_odd_tenant_names_round_trip(rt: Runtime, cli_env: dict[str, str]) -> None:
    adds = papayya_all(
        cli_env,
        *(["tenants", "add", name, "--config", f"label={name}"] for name in (SQL_TENANT, UNICODE_TENANT)),
    )
    for added in adds:
        ok_text(added)
    seed_run(SQL_TENANT)

    sql_show, uni_show, uni_text, listed, runs = papayya_all(
        cli_env,
        ["tenants", "show", SQL_TENANT, "--json"],
        ["tenants", "show", UNICODE_TENANT, "--json"],
        ["tenants", "show", UNICODE_TENANT],
        ["tenants", "list", "--json"],
        ["runs", "list", "--tenant", SQL_TENANT, "--json"],
    )

    for shown, name in ((sql_show, SQL_TENANT), (uni_show, UNICODE_TENANT)):
        detail = ok_json(shown)
        assert (detail["tenant"], detail["config"]) == (name, {"label": name})
    assert UNICODE_TENANT in ok_text(uni_text)
    names = [t["tenant"] for t in ok_json(listed)]
    assert SQL_TENANT in names
    assert UNICODE_TENANT in names
    (row,) = ok_json(runs)
    assert row["tenant"] == SQL_TENANT
    assert row["counts"]["failed"] == 1  # papayya.items is still there, and scoped by the odd name


def test_bad_input_and_database_problems_get_one_sentence(cli_env: dict[str, str]) -> None:
    # Refusals that need no database (usage errors, malformed values) are covered in-process by
    # tests/unit/test_cli.py; these go through the store or the configuration.
    missing = str(uuid.uuid4())
    cases: list[tuple[dict[str, str], list[str], tuple[str, ...]]] = [
        ({}, ["runs", "show", missing], (f"No run {missing}", "papayya runs list")),
        ({}, ["items", "show", missing], (f"No item {missing}", "papayya items list")),
        ({}, ["items", "show", "not-an-id"], ("not-an-id",)),  # a key now: looked up, not found
        ({}, ["runs", "show", "1234"], ("'1234' is not a run id", "papayya runs list")),
        (
            {},
            ["tenants", "show", "no-such-tenant"],
            ("'no-such-tenant' does not exist", "papayya tenants list"),
        ),
        ({}, ["tenants", "show", "x" * 10_000], ("10000 characters", "at most 128")),
        ({"PAPAYYA_DATABASE_URL": "not a url"}, ["runs", "list"], ("PAPAYYA_DATABASE_URL",)),
        (
            {"PAPAYYA_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x"},
            ["tenants", "list"],
            ("Cannot reach PostgreSQL", "127.0.0.1", "PAPAYYA_DATABASE_URL"),
        ),
    ]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda case: papayya(cli_env, *case[1], **case[0]), cases))
    for (_, args, fragments), result in zip(cases, results, strict=True):
        line = assert_one_sentence(result, *fragments)
        assert len(line) < 400, (args[:2], line)  # a 10 kB argument is not echoed back
