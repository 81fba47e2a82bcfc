"""Failure clusters over a run of 1,000,000 items, run on demand (not part of the test suite):

    python tests/benchmarks/bench_clusters.py [--smoke]    # embedded PostgreSQL under a temp dir
    PAPAYYA_DATABASE_URL=postgresql://... python tests/benchmarks/bench_clusters.py

Builds, directly in SQL, one tenant with one run of BENCH_ITEMS items (default 1,000,000; ~2 % degraded
in 3 fingerprints, ~0.2 % failed in 2, finished over the last 36 hours) and a second tenant with a run
of a fifth of that (same shapes of failure, so tenant scoping matters), then VACUUM ANALYZE. Then times,
warm, best and median of REPEAT calls each:

- ``papayya.clusters(run_id=RUN)``, ``clusters(tenant=T)``, ``clusters(tenant=T, since=1 day ago)``,
  each beside the same SQL text (the store's named query ``clusters``, same parameters) on a separate
  connection with index and bitmap scans disabled: the full sequential scan the indexes avoid;
- ``RunResult.load(RUN, T)`` (what ``papayya runs show`` reads), beside its queries run the same way.

Then prints EXPLAIN (ANALYZE, BUFFERS) of the run-scoped query, with and without the indexes. The
benchmark's tenants and runs are deleted at the end; the embedded server's temp home is removed.
``--smoke`` runs it once over 2,000 items (CI: it still runs; the figures mean nothing).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

import papayya
from papayya.result import RunResult
from papayya.runtime import get_runtime
from papayya.store import Store
from papayya.store.queries import q

N_ITEMS = int(os.environ.get("BENCH_ITEMS", "1000000"))
N_OTHER = N_ITEMS // 5
REPEAT = int(os.environ.get("BENCH_REPEAT", "10"))
TARGET_MS = 200.0
SPAN = timedelta(hours=36)  # how long the big run took: items finished evenly over it

# The shapes of failure: per 10,000 items, buckets [lo, hi] of a hash of the item number.
CLUSTERS_SQL = """
    (VALUES
      (0, 13, 'failed', 'TimeoutError', 'Timeout after <n>s', 'call_llm', 'transient', NULL::text),
      (14, 19, 'failed', 'KeyError', '<str>', 'parse_answer', 'bug', NULL),
      (20, 119, 'degraded', NULL, NULL, NULL, NULL, 'missing_field:$.summary'),
      (120, 179, 'degraded', NULL, NULL, NULL, NULL, 'schema_mismatch:$.entities[*].type'),
      (180, 219, 'degraded', NULL, NULL, NULL, NULL, 'truncated:')
    ) AS c(lo, hi, status, etype, pattern, frame, category, reason)
"""

INSERT_ITEMS = f"""
INSERT INTO papayya.items (item_id, run_id, tenant_id, key, input, status, attempts, max_attempts,
                           reasons, output, error, fingerprint, cluster_label, cost_usd,
                           created_at, updated_at, finished_at)
SELECT gen_random_uuid(), %(run_id)s, %(tenant_id)s, 'doc-' || lpad(g::text, 7, '0'),
       jsonb_build_object('id', 'doc-' || g, 'url', 'https://example.com/doc/' || g, 'lang', 'en'),
       coalesce(c.status, 'succeeded'), 1, 3,
       CASE WHEN c.reason IS NULL THEN '[]'::jsonb
            ELSE jsonb_build_array(jsonb_build_object(
                'code', split_part(c.reason, ':', 1),
                'path', nullif(split_part(c.reason, ':', 2), ''),
                'message', 'item ' || g)) END,
       CASE WHEN coalesce(c.status, 'succeeded') = 'failed' THEN NULL
            ELSE jsonb_build_object('summary', 'a summary of document ' || g) END,
       CASE WHEN c.etype IS NULL THEN NULL
            ELSE jsonb_build_object('type', c.etype, 'pattern', c.pattern, 'frame', c.frame,
                                    'category', c.category, 'message', c.etype || ' on item ' || g) END,
       CASE WHEN c.status IS NULL THEN NULL
            ELSE left(md5(c.status || coalesce(c.etype, '') || coalesce(c.reason, '')), 16) END,
       CASE WHEN c.reason IS NOT NULL
            THEN rtrim(split_part(c.reason, ':', 1) || ': ' || split_part(c.reason, ':', 2), ': ')
            WHEN c.etype IS NOT NULL
            THEN c.etype || ' ' || c.pattern || ' in ' || c.frame || ' (' || c.category || ')' END,
       round((0.0004 + random() * 0.0016)::numeric, 6),
       %(start)s, %(start)s + g * %(step)s, %(start)s + g * %(step)s
FROM generate_series(1, %(n)s) AS g
LEFT JOIN {CLUSTERS_SQL} ON (g::bigint * 2654435761) %% 10000 BETWEEN c.lo AND c.hi
"""

RUN_SHOW_QUERIES = (
    "run_get",
    "run_status_counts",
    "run_cost",
    "run_top_reasons",
    "run_top_failures",
    "run_cost_by_model",
)


def create_data(url: str, tenant: str, run_id: uuid.UUID, n: int, now: datetime) -> float:
    t = time.perf_counter()
    start = now - SPAN
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO papayya.runs (run_id, tenant_id, agent_name, name, backend, status, total_items, "
            "created_at, finished_at) "
            "VALUES (%s, %s, 'summarise', 'bench', 'native', 'completed', %s, %s, %s)",
            (run_id, tenant, n, start, now),
        )
        conn.execute(
            INSERT_ITEMS,
            {"run_id": run_id, "tenant_id": tenant, "n": n, "start": start, "step": SPAN / n},
        )
    return time.perf_counter() - t


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """Best and median wall ms over REPEAT calls, after two warm-up calls."""
    out = fn()
    fn()
    ms = []
    for _ in range(REPEAT):
        t = time.perf_counter()
        fn()
        ms.append((time.perf_counter() - t) * 1000)
    return min(ms), statistics.median(ms), out


def plan_summary(conn: psycopg.Connection[Any], sql: str, params: dict[str, Any]) -> list[str]:
    row = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", params).fetchone()  # type: ignore[arg-type]
    assert row is not None
    doc = next(iter(row.values()))[0]
    lines: list[str] = []

    def walk(node: dict[str, Any], depth: int) -> None:
        what = node["Node Type"]
        if node.get("Index Name"):
            what += f" using {node['Index Name']}"
        elif node.get("Relation Name"):
            what += f" on {node['Relation Name']}"
        hit, read = node.get("Shared Hit Blocks", 0), node.get("Shared Read Blocks", 0)
        extra = ""
        if node.get("Heap Fetches") is not None:
            extra += f", heap fetches {node['Heap Fetches']:,}"
        if node.get("Rows Removed by Filter"):
            extra += f", removed by filter {node['Rows Removed by Filter']:,}"
        if node.get("Exact Heap Blocks") is not None:
            extra += f", heap blocks {node['Exact Heap Blocks']:,}"
        lines.append(
            f"{'  ' * depth}{what}: rows {node['Actual Rows']:,.0f} x{node['Actual Loops']}, "
            f"{node['Actual Total Time']:.1f} ms, buffers hit {hit:,} read {read:,}{extra}"
        )
        for child in node.get("Plans", []):
            walk(child, depth + 1)

    walk(doc["Plan"], 0)
    lines.append(f"planning {doc['Planning Time']:.2f} ms, execution {doc['Execution Time']:.1f} ms")
    return lines


def main() -> None:
    global N_ITEMS, N_OTHER, REPEAT
    parser = argparse.ArgumentParser(description="Failure clusters over a run of 1,000,000 items.")
    parser.add_argument(
        "--smoke", action="store_true", help="once over 2,000 items (CI): figures meaningless"
    )
    smoke = parser.parse_args().smoke
    if smoke:
        N_ITEMS, N_OTHER, REPEAT = 2_000, 400, 1
    server = bool(os.environ.get("PAPAYYA_DATABASE_URL"))
    home = Path(tempfile.mkdtemp(prefix="papayya-bench-"))
    papayya.configure(home=home, progress=False)
    url = get_runtime().store.url
    tag = uuid.uuid4().hex[:6]
    tenant, other = f"bench-clusters-{tag}", f"bench-clusters-other-{tag}"
    run_id, other_run = uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(url, autocommit=True) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
    ram_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {ram_gib:.0f} GiB, Python "
        f"{platform.python_version()}, {platform.system()} {platform.release()}; store: "
        f"{'PostgreSQL server' if server else 'embedded PostgreSQL (Unix socket)'} {version}"
    )
    try:
        papayya.tenants.add(tenant)
        papayya.tenants.add(other)
        now = datetime.now(UTC)
        took = create_data(url, tenant, run_id, N_ITEMS, now)
        took += create_data(url, other, other_run, N_OTHER, now)
        t = time.perf_counter()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM (ANALYZE) papayya.items")
            conn.execute("ANALYZE papayya.runs")
            size = conn.execute(
                "SELECT pg_size_pretty(pg_table_size('papayya.items')), "
                "pg_size_pretty(pg_indexes_size('papayya.items'))"
            ).fetchone()
            assert size is not None
        print(
            f"data: tenant {tenant}: one run of {N_ITEMS:,} items; tenant {other}: one run of "
            f"{N_OTHER:,}; written in {took:.0f} s, VACUUM ANALYZE {time.perf_counter() - t:.0f} s; "
            f"items table {size[0]}, its indexes {size[1]}"
        )
        print(
            f"warm cache, best and median of {REPEAT} calls"
            + ("; SMOKE RUN: tiny sizes, the figures mean nothing" if smoke else "")
            + "\n"
        )

        since = now - timedelta(days=1)
        base_conn = psycopg.connect(url, autocommit=True, row_factory=dict_row)
        for setting in ("enable_indexscan", "enable_bitmapscan", "enable_indexonlyscan"):
            base_conn.execute(f"SET {setting} = off")  # type: ignore[arg-type]

        def params(**kw: Any) -> dict[str, Any]:
            return {
                "run_id": None,
                "tenant_id": None,
                "agent": None,
                "since": None,
                "until": None,
                "limit": 50,
            } | kw

        def baseline(p: dict[str, Any]) -> Callable[[], list[Any]]:
            return lambda: base_conn.execute(q("clusters"), p).fetchall()

        run_show = {"run_id": run_id, "tenant_id": tenant, "limit": 10}

        def baseline_load() -> None:
            for name in RUN_SHOW_QUERIES:
                base_conn.execute(q(name), run_show).fetchall()

        cases: list[tuple[str, Callable[[], Any], Callable[[], Any]]] = [
            (
                "clusters(run_id=RUN)",
                lambda: papayya.clusters(run_id=run_id),
                baseline(params(run_id=run_id)),
            ),
            (
                "clusters(tenant=T)",
                lambda: papayya.clusters(tenant=tenant),
                baseline(params(tenant_id=tenant)),
            ),
            (
                "clusters(tenant=T, since=1 day ago)",
                lambda: papayya.clusters(tenant=tenant, since=since),
                baseline(params(tenant_id=tenant, since=since)),
            ),
            ("RunResult.load(RUN, T)", lambda: RunResult.load(run_id, tenant), baseline_load),
        ]
        print(
            f"   {'':38} {'clusters':>8} {'items':>7} {'best ms':>8} {'median':>8}   "
            f"{'seq scan best':>13} {'median':>8} {'seq/idx':>8}"
        )
        for label, fn, base in cases:
            best, med, out = timed(fn)
            bbest, bmed, _ = timed(base)
            if isinstance(out, list):
                n_clusters, n_items = f"{len(out)}", f"{sum(c.items for c in out):,}"
            else:
                n_clusters, n_items = "", f"{out.total:,}"
            mark = "" if label.startswith("RunResult") else ("  ok" if best <= TARGET_MS else "  MISS")
            print(
                f"   {label:38} {n_clusters:>8} {n_items:>7} {best:>8.1f} {med:>8.1f}   "
                f"{bbest:>13.1f} {bmed:>8.1f} {bbest / best:>7.1f}x{mark}"
            )
        print(f"   target: clusters over {N_ITEMS:,} items in <= {TARGET_MS:.0f} ms (ok/MISS on best)")

        # The same reads as a login role bound to the tenant (row-level security, migration 0011):
        # the store's run_get + run_summary, which is what RunResult.load asks, as the owner and as it.
        role = f"papayya_bench_{tag}"
        get_runtime().store.tenant_grant(tenant, role)
        info = psycopg.conninfo.conninfo_to_dict(url)
        info.update(user=role, password=None)
        role_store = Store(
            psycopg.conninfo.make_conninfo(**{k: v for k, v in info.items() if v}), pool_size=2
        )
        try:
            for label, store in (
                ("owner (unscoped)", get_runtime().store),
                ("tenant-bound role", role_store),
            ):
                best, med, out = timed(
                    lambda store=store: (
                        store.run_get(run_id, tenant),
                        store.run_summary(run_id, tenant, top=10),
                    )
                )
                counted = sum(out[1]["counts"].values())
                print(f"   runs show reads as the {label:<20} {counted:>9,} items {best:>8.1f} {med:>8.1f}")
        finally:
            role_store.close()
            get_runtime().store.tenant_revoke(role)
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f'DROP ROLE IF EXISTS "{role}"')  # type: ignore[arg-type]

        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
            parts = []
            for name in RUN_SHOW_QUERIES:
                best, _, _ = timed(lambda name=name: conn.execute(q(name), run_show).fetchall())
                parts.append(f"{name} {best:.1f}")
            print(f"   RunResult.load, its run queries alone (best ms): {', '.join(parts)}")
            print("\nEXPLAIN (ANALYZE, BUFFERS) clusters(run_id=RUN), with the indexes:")
            for line in plan_summary(conn, q("clusters"), params(run_id=run_id)):
                print(f"   {line}")
        print("same, index and bitmap scans disabled (the baseline):")
        for line in plan_summary(base_conn, q("clusters"), params(run_id=run_id)):
            print(f"   {line}")
        base_conn.close()
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            for t_id in (tenant, other):
                conn.execute("DELETE FROM papayya.items WHERE tenant_id = %s", (t_id,))
                conn.execute("DELETE FROM papayya.budget_accounts WHERE tenant_id = %s", (t_id,))
                conn.execute("DELETE FROM papayya.runs WHERE tenant_id = %s", (t_id,))
                conn.execute("DELETE FROM papayya.tenants WHERE tenant_id = %s", (t_id,))
        papayya.reset()
        if not server:
            from papayya.store import embedded

            for pg in embedded._servers.values():  # stop the private server, then drop its files
                pg.cleanup()
            embedded._servers.clear()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
