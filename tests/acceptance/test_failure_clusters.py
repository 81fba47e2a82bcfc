"""Failure clusters of messages that carry item data unquoted: one cluster per shape, not per item.

A batch for two tenants fails in four shapes whose messages hold unquoted ids (``i0042``,
``acme-00012``), paths, emails and URLs. Through the real store path (agent -> execute -> store)
and read back the way a user reads them (``papayya failures --json`` in a subprocess, and
``papayya.clusters()``), the four shapes are four clusters, each spanning both tenants, and no
label holds any item's data.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from typing import Any

import papayya
from papayya import agent
from papayya.runtime import Runtime

IDS = ["i0042", "acme-00012", "INV-2026-0042", "42", "doc_7b", "x9"]
PATHS = [
    "/srv/tenants/acme/in/doc-17.pdf",
    "/srv/tenants/globex/in/q3-report.pdf",
    "C:\\exports\\initech\\ledger.xlsx",
    "data/umbrella/report.csv",
    "~/inbox/letter-2.pdf",
    "invoice.pdf",
]
EMAILS = [
    "bob.smith@acme.io",
    "j.doe+billing@globex.co.uk",
    "ops@initech.com",
    "x9@umbrella.example",
    "anna@hooli.dev",
    "c.ceo@piedpiper.net",
]
URLS = [
    "https://api.acme.io/v1/items/i0042?page=3",
    "http://globex.internal:8080/export/acme-00012",
    "https://hooli.dev/a/b/c.json",
    "https://x.io/",
    "https://piedpiper.net/compress?q=middle-out&n=1",
    "https://api.initech.com/v2/tps/reports/7",
]


def raise_for(item: papayya.Item) -> None:
    """One helper for every shape: the frame is the same, so only the message's shape tells them apart."""
    n = int(item["n"])
    if item["shape"] == "page":
        raise ValueError(f"bad page {n * 7 % 40} of doc {item.id}")
    if item["shape"] == "path":
        raise ValueError(f"cannot read {PATHS[n]}: permission denied")
    if item["shape"] == "email":
        raise ValueError(f"no mailbox for {EMAILS[n]} (bounced after {n + 1} tries)")
    raise ValueError(f"fetch {URLS[n]} for {item.id} returned {500 + n}")


def batch() -> list[dict[str, Any]]:
    return [
        {"id": f"{shape}-{key}", "shape": shape, "n": n}
        for shape in ("page", "path", "email", "url")
        for n, key in enumerate(IDS)
    ]


def item_data() -> list[str]:
    """Every piece of item data that could leak into a label, down to the names inside paths."""
    pieces = [*IDS, *PATHS, *EMAILS, *URLS, "acme", "globex", "initech", "umbrella", "hooli", "piedpiper"]
    return pieces + [item["id"] for item in batch()]


def assert_no_item_data(label: str) -> None:
    for piece in item_data():
        assert piece not in label, (piece, label)
    assert not any(ch.isdigit() for ch in label.replace("test_failure_clusters.py", "")), label


def test_four_shapes_with_unquoted_ids_paths_emails_and_urls_are_four_clusters(
    rt: Runtime, tenant: str, cli_env: dict[str, str]
) -> None:
    name = f"clusters-{uuid.uuid4().hex[:8]}"

    @agent(name=name)
    def enrich(item: papayya.Item) -> str:
        raise_for(item)
        return "ok"

    other = f"{tenant}-b"
    results = [enrich.map(batch(), tenant=t) for t in (tenant, other)]
    for result in results:
        assert result.counts["failed"] == len(batch())
        per_run = result.clusters()
        assert len(per_run) == 4, [c.label for c in per_run]
        assert sorted(c.items for c in per_run) == [6, 6, 6, 6]

    # The same shapes across tenants and runs are the same clusters: the fingerprint is the identity.
    assert {c.cluster for c in results[0].clusters()} == {c.cluster for c in results[1].clusters()}

    proc = subprocess.run(
        [sys.executable, "-m", "papayya", "failures", "--agent", name, "--json"],
        env=cli_env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    rows = json.loads(proc.stdout)
    assert len(rows) == 4, [r["label"] for r in rows]
    assert all((r["items"], r["tenants"], r["outcome"]) == (12, 2, "failed") for r in rows)
    labels = sorted(r["label"] for r in rows)
    where = " in test_failure_clusters.py:raise_for (user)"
    assert labels == [
        f"ValueError bad page <n> of doc <n>{where}",
        f"ValueError cannot read <path>: permission denied{where}",
        f"ValueError fetch <url> for <n> returned <n>{where}",
        f"ValueError no mailbox for <email> (bounced after <n> tries){where}",
    ]
    for label in labels:
        assert_no_item_data(label)

    # Each cluster holds exactly the items of one shape, and replay --cluster can pick it.
    by_shape = {r["label"].split()[1]: r for r in rows}
    for shape, word in (("page", "bad"), ("path", "cannot"), ("email", "no"), ("url", "fetch")):
        expected = sorted(f"{shape}-{key}" for key in IDS)
        row = by_shape[word]
        in_run = [
            i.key
            for i in results[0].items(outcome="failed")
            if i.fingerprint == row["cluster"]  # the id `papayya replay --cluster` takes
        ]
        assert sorted(in_run) == expected
