"""Reading back what papayya prints, and reading across runs, from the command line.

Every id the CLI and the dashboard print is accepted back (item keys, short run ids, UUIDs), and an id
that names several things is refused in one sentence listing them. The batch is the user's script of
tests/acceptance/test_cli_replay.py (of every ten items, 3, 7 and 9 degrade without a summary, 4 as
low confidence, 6 and 8 fail, the rest succeed; ``BATCH_FIXED=1`` mends the missing summary).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

import papayya
from papayya.runtime import Runtime
from tests.acceptance.test_cli import assert_one_sentence, ok_json, ok_text, papayya_all
from tests.acceptance.test_cli import papayya as cli
from tests.acceptance.test_cli_budgets import run_batch
from tests.acceptance.test_cli_replay import BATCH, MISSING


@pytest.fixture
def batch(tmp_path: Path) -> Path:
    script = tmp_path / "project" / "batch.py"
    script.parent.mkdir()
    script.write_text(BATCH, encoding="utf-8")
    return script


def batch_run(env: dict[str, str], script: Path, tenant: str) -> str:
    """Run the batch for ``tenant``; the id of the new run."""
    assert "succeeded 8, degraded 8, failed 4 of 20 items" in run_batch(env, script, tenant)
    return str(ok_json(cli(env, "runs", "list", "--tenant", tenant, "--limit", "1", "--json"))[0]["run_id"])


def test_keys_short_run_ids_and_uuids_are_accepted_back(
    cli_env: dict[str, str], batch: Path, tenant: str
) -> None:
    original = batch_run(cli_env, batch, tenant)
    key = MISSING[0]

    # When the user replays one item by its key (as `items list` and the dashboard print it)
    replayed = ok_json(cli(cli_env, "replay", "--item", key, "--tenant", tenant, "--json", BATCH_FIXED="1"))
    new = str(replayed["run_id"])
    assert replayed["replay_slice"]["key"] == key
    assert replayed["counts"]["succeeded"] == 1

    by_key, in_original, by_short_run, by_uuid_prefix, failures_short = papayya_all(
        cli_env,
        ["items", "show", key, "--tenant", tenant, "--json"],
        ["items", "show", key, "--run", original[:8], "--json"],
        ["runs", "show", original[:8], "--json"],
        ["items", "show", str(replayed["replay_slice"]["item"])[:8], "--json"],
        ["failures", original[:8], "--tenant", tenant, "--json"],
    )
    # Then the key names the item with its replay: shown as the one whose outcome counts now
    shown = ok_json(by_key)
    assert (shown["run_id"], shown["status"]) == (new, "succeeded")
    assert [(e["run_id"], e["status"]) for e in shown["lineage"]] == [
        (original, "degraded"),
        (new, "succeeded"),
    ]
    # and --run (a short id, as the dashboard prints it) picks the run
    assert (ok_json(in_original)["run_id"], ok_json(in_original)["status"]) == (original, "degraded")
    assert ok_json(by_short_run)["run_id"] == original
    assert ok_json(by_uuid_prefix)["item_id"] == replayed["replay_slice"]["item"]
    assert [c["items"] for c in ok_json(failures_short)] == [6, 4, 2]


def test_an_id_naming_several_things_is_refused_with_the_candidates(
    rt: Runtime, cli_env: dict[str, str], batch: Path, tenant: str
) -> None:
    # Given the batch run twice for one tenant (each key in two runs that are not replays of each other)
    first = batch_run(cli_env, batch, tenant)
    second = batch_run(cli_env, batch, tenant)
    # and two runs, of two tenants, whose ids start alike
    other = f"{tenant}-b"
    prefix = uuid.uuid4().hex[:8]
    twins = [uuid.UUID(f"{prefix}-0000-4000-8000-00000000000{n}") for n in (1, 2)]
    for run_id, owner in zip(twins, (tenant, other), strict=True):
        papayya.tenants.add(owner, exist_ok=True)
        rt.store.run_create(
            run_id=run_id,
            tenant_id=owner,
            agent_name="reads.twin",
            name=None,
            backend="native",
            items=[],
            max_attempts=1,
            options={},
        )

    key, twin_run, scoped, nowhere, unknown, no_key, replay_key = papayya_all(
        cli_env,
        ["items", "show", MISSING[0], "--tenant", tenant],
        ["runs", "show", prefix],
        ["failures", prefix, "--tenant", other, "--json"],
        ["runs", "show", "0000aaaa"],
        ["items", "show", "no-such-key", "--tenant", tenant],
        ["items", "show", MISSING[0], "--run", first, "--json"],
        ["replay", "--item", MISSING[0], "--tenant", tenant],
    )

    line = assert_one_sentence(key, f"Item id {MISSING[0]!r} names 2 different items", "--run RUN")
    assert first in line
    assert second in line
    assert_one_sentence(replay_key, "names 2 different items", "--run RUN")
    line = assert_one_sentence(twin_run, f"'{prefix}' starts the ids of 2 runs", "longer prefix")
    assert str(twins[0]) in line
    assert str(twins[1]) in line
    # with --tenant the prefix is that tenant's run
    assert ok_json(scoped) == []
    assert_one_sentence(
        nowhere, "'0000aaaa' is not a run id, nor the start of the id of a run", "papayya runs list"
    )
    assert_one_sentence(unknown, "'no-such-key' is not an item id", "papayya items list")
    assert ok_json(no_key)["run_id"] == first
    # and nothing was replayed
    runs = ok_json(cli(cli_env, "runs", "list", "--tenant", tenant, "--json"))
    assert sorted(r["run_id"] for r in runs) == sorted([first, second, str(twins[0])])
    ok_text(cli(cli_env, "runs", "show", second[:12]))


def test_cross_run_views_count_each_item_once_and_replay_a_cluster_across_runs(
    cli_env: dict[str, str], batch: Path, tenant: str
) -> None:
    # Given two runs of the batch for one tenant, with different item ids (i00.., j00..)
    script = batch.with_name("batch.py")
    script.write_text(
        BATCH.replace('{"id": f"i{n:02d}"', '{"id": os.environ.get("BATCH_PREFIX", "i") + f"{n:02d}"'),
        encoding="utf-8",
    )
    first = batch_run(cli_env, script, tenant)
    second = batch_run({**cli_env, "BATCH_PREFIX": "j"}, script, tenant)
    (missing,) = [
        c
        for c in ok_json(cli(cli_env, "failures", "--tenant", tenant, "--json"))
        if c["label"] == "schema.missing_field: summary"
    ]
    assert missing["items"] == 12  # 6 in each run

    # When the user fixes the missing summary and replays that cluster across the tenant's runs
    replayed = ok_json(
        cli(cli_env, "replay", "--tenant", tenant, "--cluster", missing["cluster"], "--json", BATCH_FIXED="1")
    )

    # Then one new run holds the 12 items of both runs, linked to them
    assert (replayed["total"], replayed["counts"]["succeeded"]) == (12, 12)
    assert replayed["replay_slice"] == {"tenant": tenant, "cluster": missing["cluster"], "runs": 2}
    assert replayed["replayed_from"] == second  # the newest run it draws from
    assert replayed["transitions"] == {"degraded->succeeded": 12}

    degraded, everything, since_then, text, tenants_json, tenants_text, pivot, pivot_text, shown = (
        papayya_all(
            cli_env,
            ["items", "list", "--tenant", tenant, "--outcome", "degraded", "--since", "1h", "--json"],
            ["items", "list", "--tenant", tenant, "--json"],
            ["items", "list", "--tenant", tenant, "--outcome", "degraded", "--since", "2999-01-01"],
            ["items", "list", "--tenant", tenant, "--limit", "5"],
            ["tenants", "list", "--json"],
            ["tenants", "list"],
            ["costs", "--by", "tenant,model", "--tenant", tenant, "--json"],
            ["costs", "--by", "tenant,model", "--tenant", tenant],
            ["runs", "show", str(replayed["run_id"])],
        )
    )
    # and cross-run item lists see each item once, as it stands now
    assert [i["key"] for i in ok_json(degraded)["items"]] == ["i04", "i14", "j04", "j14"]
    items = ok_json(everything)["items"]
    assert len(items) == 40
    assert sum(i["replayed"] for i in items) == 12
    assert {i["key"]: i["status"] for i in items}["i03"] == "succeeded"
    assert {i["run_id"] for i in items if i["replayed"]} == {str(replayed["run_id"])}
    assert ok_text(since_then).startswith(f"Tenant {tenant!r} has no degraded items since 2999-01-01")
    out = ok_text(text)
    assert "i00" in out
    assert f"papayya items list --tenant {tenant} --limit 5 --after i04" in out
    # and tenants list counts degraded and failed items by tenant, replays beside
    row = {t["tenant"]: t for t in ok_json(tenants_json)}[tenant]
    assert (row["items"], row["replayed"]) == ({"succeeded": 28, "degraded": 4, "failed": 8}, 12)
    line = next(x for x in ok_text(tenants_text).splitlines() if x.startswith(tenant + " "))
    assert line.split()[1:6] == ["3", "40", "4", "8", "12"]
    # and costs pivot by tenant and model
    report = ok_json(pivot)
    assert report["by"] == "tenant,model"
    (only,) = report["rows"]
    assert (only["tenant"], only["model"], only["calls"]) == (tenant, "openai/gpt-4o-mini", 48)
    assert report["total"]["cost_usd"] == only["cost_usd"]
    out = ok_text(pivot_text)
    assert "tenant \\ model" in out
    assert "openai/gpt-4o-mini" in out
    assert f"across 2 runs of tenant {tenant}" in ok_text(shown)
    assert first != second


def test_cross_run_views_refuse_what_they_cannot_do(cli_env: dict[str, str], tenant: str) -> None:
    ok_text(cli(cli_env, "tenants", "add", tenant))
    results = papayya_all(
        cli_env,
        ["items", "list"],
        ["replay", "--tenant", tenant, "--ids", "i01"],
        ["replay", "--tenant", tenant, "--cluster", "0123456789abcdef"],
        ["replay", "--tenant", tenant, "--outcome", "degraded"],
        ["costs", "--by", "model,model"],
        ["items", "list", "--tenant", f"{tenant}-nobody"],
    )
    expected = [
        ("Say whose items",),
        ("--ids chooses items of one run",),
        ("No item of tenant", "is in cluster '0123456789abcdef'", "papayya failures --tenant"),
        ("is empty; nothing was created",),
        ("'model,model' is not one of",),
        ("does not exist",),
    ]
    for result, fragments in zip(results, expected, strict=True):
        assert_one_sentence(result, *fragments)
