"""Tenant isolation held by the store (migration 0011): row-level security on every tenant table, a
tenant-bound role that cannot widen itself, composite keys that stop a row pointing at another
tenant's, and papayya itself running a tenant's batch as that role.

Every check connects as the tenant's own login role, never ``SET ROLE`` from a superuser (a superuser,
like the embedded server's default user, bypasses row-level security).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

import papayya
from papayya import agent, run
from papayya.errors import NotFound, TenantError
from papayya.result import RunResult
from papayya.runtime import Runtime, get_runtime
from papayya.store import Store


def fake_llm(*, prompt: str) -> dict[str, Any]:
    return {
        "model": "gpt-4o-mini",
        "usage": {"prompt_tokens": 12, "completion_tokens": 4},
        "choices": [{"finish_reason": "stop", "message": {"content": prompt}}],
    }


@agent(name="isolation-enrich")
def enrich(item: papayya.Item) -> Any:
    answer = run.llm("answer", provider="openai", model="gpt-4o-mini", max_tokens=5)(fake_llm, prompt=item.id)
    run.step("store")(lambda: item.id)
    return {"id": item.id, "answer": answer["choices"][0]["message"]["content"]}


def as_role(url: str, role: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["user"] = role
    info.pop("password", None)
    return psycopg.conninfo.make_conninfo(**{k: v for k, v in info.items() if v is not None})


TENANT_TABLES_SQL = """
SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
WHERE n.nspname = 'papayya' AND c.relkind = 'r' ORDER BY 1
"""


@pytest.fixture
def two_tenants(rt: Runtime, database_url: str) -> Iterator[dict[str, Any]]:
    """Tenants A and B, each with a finished run (calls, journal, counters), and a login role bound to A."""
    a, b = f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}"
    runs = {t: enrich.map([{"id": f"{t}-{n}"} for n in range(3)], tenant=t) for t in (a, b)}
    assert [r.counts["succeeded"] for r in runs.values()] == [3, 3]
    role = f"papayya_test_{uuid.uuid4().hex[:8]}"
    assert get_runtime().store.tenant_grant(a, role) is True
    yield {"a": a, "b": b, "runs": runs, "role": role, "url": as_role(database_url, role)}
    papayya.reset()  # (the test may have configured papayya with the role: its sessions end here)
    owner = Store(database_url, pool_size=1, auto_migrate=False)
    try:
        assert owner.tenant_revoke(role) == a
    finally:
        owner.close()
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_every_table_holding_tenant_rows_has_row_level_security_and_a_policy(
    rt: Runtime, database_url: str
) -> None:
    with psycopg.connect(database_url) as conn:
        tables = [r[0] for r in conn.execute(TENANT_TABLES_SQL)]
        unguarded = conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'papayya' AND c.relname = ANY(%s) AND (NOT c.relrowsecurity "
            "OR NOT EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid))",
            (tables,),
        ).fetchall()
        views = conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'papayya' AND c.relkind IN ('v', 'm') "
            "AND NOT coalesce(c.reloptions @> ARRAY['security_invoker=true'], false)"
        ).fetchall()
    assert len(tables) >= 12
    assert unguarded == []
    assert views == []


def test_a_tenant_bound_role_sees_and_changes_only_its_tenants_rows_whatever_it_sets(
    two_tenants: dict[str, Any],
) -> None:
    a, b, url = two_tenants["a"], two_tenants["b"], two_tenants["url"]
    b_run = two_tenants["runs"][b].run_id
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT session_user").fetchone() == (two_tenants["role"],)
        tables = [r[0] for r in conn.execute(TENANT_TABLES_SQL) if r[0] != "tenant_roles"]  # (below)
        for widen in (None, b, ""):
            if widen is not None:
                conn.execute("SELECT set_config('papayya.tenant', %s, false)", (widen,))
            for table in tables:
                query = sql.SQL("SELECT tenant_id, count(*) FROM {} GROUP BY 1").format(
                    sql.Identifier("papayya", table)
                )
                seen = dict(conn.execute(query).fetchall())
                assert set(seen) <= {a, "*"}, (table, widen, seen)
            # guessing B's ids finds nothing
            assert conn.execute(
                "SELECT count(*) FROM papayya.items WHERE run_id = %s", (b_run,)
            ).fetchone() == (0,)
            # and changing B's rows changes nothing
            changed = conn.execute(
                "UPDATE papayya.items SET status = 'cancelled' WHERE run_id = %s", (b_run,)
            )
            assert changed.rowcount == 0
            assert conn.execute("DELETE FROM papayya.llm_calls WHERE run_id = %s", (b_run,)).rowcount == 0
        # the mapping of roles is not readable, and writing B's rows is refused by the database
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM papayya.tenant_roles")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                "INSERT INTO papayya.runs (run_id, tenant_id, agent_name, backend)"
                " VALUES (%s, %s, 'x', 'native')",
                (uuid.uuid4(), b),
            )
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE papayya.tenants SET budget_usd = 1000000 WHERE tenant_id = %s", (a,))
        # a row of A's cannot point at B's run either: keys carry the tenant (foreign keys skip policies)
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute(
                "INSERT INTO papayya.items (item_id, run_id, tenant_id, key, input)"
                " VALUES (%s, %s, %s, 'k', '{}')",
                (uuid.uuid4(), b_run, a),
            )

    # B's rows are all still there, seen by the owner
    assert RunResult.load(b_run, b).counts == {"succeeded": 3, "degraded": 0, "failed": 0}


def test_papayya_runs_a_tenants_batch_as_its_bound_role_and_sees_only_that_tenant(
    two_tenants: dict[str, Any], tmp_path: Any
) -> None:
    a, b = two_tenants["a"], two_tenants["b"]
    b_run = two_tenants["runs"][b].run_id
    # Given papayya configured with the tenant-bound role's URL (no migration rights, no COPY rights)
    papayya.reset(forget_configuration=True)
    papayya.configure(database_url=two_tenants["url"], home=tmp_path / ".papayya", progress=False)

    # When it runs a batch for its tenant, LLM calls, journal and counters included
    result = enrich.map([{"id": f"{a}-new-{n}"} for n in range(4)], tenant=a)

    # Then the batch is recorded and accounted as for any role
    assert result.counts == {"succeeded": 4, "degraded": 0, "failed": 0}
    assert result.llm_calls == 4
    # and another tenant's run is not found, as if it did not exist
    with pytest.raises(NotFound):
        RunResult.load(b_run, b)
    assert [r["tenant_id"] for r in get_runtime().store.fetch_all("tenant_list", {"limit": 100})] == [a]
    # and it cannot record work for another tenant
    with pytest.raises(Exception, match=r"row-level security|permission denied"):
        enrich.map([{"id": "x"}], tenant=b)


def test_a_trusted_role_is_scoped_by_its_session_setting(
    two_tenants: dict[str, Any], database_url: str
) -> None:
    a, b = two_tenants["a"], two_tenants["b"]
    role = f"papayya_app_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        admin.execute(sql.SQL("GRANT USAGE ON SCHEMA papayya TO {}").format(sql.Identifier(role)))
        admin.execute(
            sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA papayya TO {}").format(sql.Identifier(role))
        )
        admin.execute(sql.SQL("REVOKE ALL ON papayya.tenant_roles FROM {}").format(sql.Identifier(role)))
    try:
        url = as_role(database_url, role)
        unscoped = Store(url, pool_size=2)
        scoped = Store(url, pool_size=2, tenant=b)
        try:
            everyone = {r["tenant_id"] for r in unscoped.fetch_all("tenant_list", {"limit": 100000})}
            assert {a, b} <= everyone
            assert [r["tenant_id"] for r in scoped.fetch_all("tenant_list", {"limit": 100000})] == [b]
            with pytest.raises(NotFound):
                scoped.run_get(two_tenants["runs"][a].run_id)
        finally:
            unscoped.close()
            scoped.close()
    finally:
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_granting_refuses_what_would_not_hold_and_names_the_problem(two_tenants: dict[str, Any]) -> None:
    store = get_runtime().store
    with pytest.raises(TenantError, match="bound to tenant"):
        store.tenant_grant(two_tenants["b"], two_tenants["role"])
    with pytest.raises(NotFound, match="No tenant"):
        store.tenant_grant("no-such-tenant", "papayya_nobody")
    with psycopg.connect(store.url) as conn:
        me = conn.execute("SELECT current_user").fetchone()
    assert me is not None
    with pytest.raises(TenantError, match=r"superuser|owns the papayya schema"):
        store.tenant_grant(two_tenants["a"], me[0])
    assert store.tenant_revoke("papayya_never_granted") is None


def test_papayya_tenant_scopes_even_a_role_that_bypasses_row_level_security(
    two_tenants: dict[str, Any], database_url: str, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from papayya.cli import main as cli_main

    a, b = two_tenants["a"], two_tenants["b"]
    a_run = two_tenants["runs"][a]
    # Given the session's own role (a superuser here: row-level security does not hold it) and
    # PAPAYYA_TENANT=B
    papayya.reset(forget_configuration=True)
    papayya.configure(database_url=database_url, home=tmp_path / ".papayya", progress=False, tenant=b)

    # Then every read shows B alone, and A's run and items are not found
    capsys.readouterr()
    assert cli_main(["runs", "list", "--json", "--limit", "1000"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed
    assert {r["tenant"] for r in listed} == {b}
    assert cli_main(["runs", "show", str(a_run.run_id), "--json"]) != 0
    assert "No run" in capsys.readouterr().err
    with pytest.raises(NotFound):
        RunResult.load(a_run.run_id, a)
    # and it still runs B's batches
    assert enrich.map([{"id": f"{b}-scoped"}], tenant=b).counts["succeeded"] == 1
    # but not A's
    with pytest.raises(Exception, match=r"row-level security|permission denied"):
        enrich.map([{"id": "x"}], tenant=a)
    papayya.reset(forget_configuration=True)


def test_a_dashboard_tenant_token_is_held_by_the_database_even_when_its_python_check_fails(
    two_tenants: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("starlette", reason="the ui extra is not installed: pip install 'papayya[ui]'")
    from starlette.testclient import TestClient

    from papayya.ui.app import create_app
    from papayya.ui.auth import Access, load_tokens

    a, b = two_tenants["a"], two_tenants["b"]
    b_run = two_tenants["runs"][b].run_id
    app = TestClient(
        create_app(load_tokens("admin", tenant_tokens=f"{a}:a-token")), base_url="http://127.0.0.1:8177"
    )
    mine = {"authorization": "Bearer a-token"}
    assert app.get(f"/api/runs/{b_run}", headers=mine).status_code == 404  # not found: no existence leak

    # When the dashboard's own check is broken (a bug lets every tenant through)
    monkeypatch.setattr(Access, "allows", lambda self, tenant_id: True)
    monkeypatch.setattr(Access, "check", lambda self, tenant_id: None)

    # Then the database still holds the token to its tenant: B's run is not found, lists hold A only
    assert app.get(f"/api/runs/{b_run}", headers=mine).status_code == 404
    assert {r["tenant"] for r in app.get(f"/api/runs?tenant={b}", headers=mine).json()} <= {a}
    assert {r["tenant"] for r in app.get("/api/runs", headers=mine).json()} == {a}
    # and the main token still sees every tenant, on the same connections
    assert {b} <= {
        r["tenant"] for r in app.get("/api/runs", headers={"authorization": "Bearer admin"}).json()
    }


def test_every_cli_read_as_a_tenant_bound_role_shows_nothing_of_another_tenant(
    two_tenants: dict[str, Any], tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from papayya.cli import main as cli_main

    a, b = two_tenants["a"], two_tenants["b"]
    a_run, b_run = two_tenants["runs"][a].run_id, two_tenants["runs"][b].run_id
    owner = get_runtime().store
    b_item = owner.items_page(b_run, tenant_id=b, limit=1)[0]["item_id"]
    a_item = owner.items_page(a_run, tenant_id=a, limit=1)[0]["item_id"]
    papayya.reset(forget_configuration=True)
    papayya.configure(database_url=two_tenants["url"], home=tmp_path / ".papayya", progress=False)
    reads = [
        ["runs", "list"],
        ["runs", "show", str(a_run)],
        ["items", "list", str(a_run)],
        ["items", "show", str(a_item)],
        ["tenants", "list"],
        ["tenants", "show", a],
        ["costs", "--by", "tenant"],
        ["costs", "--by", "tenant,model"],
        ["costs", "--by", "run"],
        ["failures"],
        ["limits", "list"],
        # another tenant's ids, guessed: not found, nothing shown
        ["runs", "show", str(b_run)],
        ["items", "show", str(b_item)],
        ["items", "list", str(b_run)],
        ["tenants", "show", b],
    ]
    answered = 0
    for argv in reads:
        capsys.readouterr()
        code = cli_main([*argv, "--json"])
        out, err = capsys.readouterr()
        answered += code == 0
        for secret in (b, str(b_run), str(b_item)):
            assert secret not in out, (argv, out)
            assert secret not in err or argv[-1] == secret or secret in argv, (argv, err)
    assert answered >= 11  # every read of the role's own tenant answered
    papayya.reset(forget_configuration=True)


def test_a_role_that_may_not_migrate_checks_the_version_and_says_who_can(
    two_tenants: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from papayya import migrate
    from papayya.errors import MigrationError

    # A store at this papayya's version: the bound role opens it (it only reads the version)
    Store(two_tenants["url"], pool_size=1).close()
    # A store behind it (a newer papayya ships a migration): one sentence, nothing changed
    shipped = migrate.available()
    future = migrate.Migration(shipped[-1].version + 1, "future", "CREATE TABLE papayya.future (x int);")
    monkeypatch.setattr(migrate, "available", lambda: [*shipped, future])
    with pytest.raises(
        MigrationError, match=r"this role cannot migrate it .*run `papayya migrate` as the role"
    ):
        Store(two_tenants["url"], pool_size=1)
    with psycopg.connect(two_tenants["url"]) as conn:
        assert conn.execute("SELECT to_regclass('papayya.future')").fetchone() == (None,)


def test_cli_grant_and_revoke_say_what_they_did_and_refuse_bad_names(
    two_tenants: dict[str, Any], database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from papayya.cli import main as cli_main

    b = two_tenants["b"]
    role = f"papayya_cli_{uuid.uuid4().hex[:8]}"
    capsys.readouterr()
    assert cli_main(["tenants", "grant", b, "--role", role]) == 0
    assert f"Created login role {role} is bound to tenant {b}" in capsys.readouterr().out
    assert cli_main(["tenants", "grant", b, "--role", role, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"tenant": b, "role": role, "created": False}
    assert cli_main(["tenants", "grant", b, "--role", 'x"; DROP TABLE papayya.items; --']) == 2
    err = capsys.readouterr().err
    assert "is not usable: use 1 to 63 letters" in err
    assert "Traceback" not in err
    assert cli_main(["tenants", "grant", "no-such-tenant", "--role", role]) != 0
    assert "No tenant 'no-such-tenant'" in capsys.readouterr().err
    assert cli_main(["tenants", "revoke", "--role", role]) == 0
    assert f"Role {role} no longer reaches tenant {b}" in capsys.readouterr().out
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
