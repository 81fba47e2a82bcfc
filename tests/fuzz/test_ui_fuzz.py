"""The dashboard's JSON API under generated path parameters and queries: a clear 4xx JSON error or an
answer, never a 500.

The application runs in this process (Starlette's test client) on the session's test database, seeded
with a tenant whose id ends in ``/spend`` beside the plain one. Cases: ``PAPAYYA_FUZZ_UI_CASES``
(default 1500); the number run and the time taken are printed.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any
from urllib.parse import quote

import pytest

import papayya
from papayya import Item, agent
from papayya.runtime import Runtime

pytest.importorskip("hypothesis", reason="hypothesis is not installed (the dev extra has it)")
pytest.importorskip("starlette", reason="the ui extra is not installed: pip install 'papayya[ui]'")
pytest.importorskip("httpx", reason="httpx drives the dashboard's application in these tests")

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from papayya.ui.app import create_app
from papayya.ui.auth import Tokens
from tests.conftest import summary_line

CASES = int(os.environ.get("PAPAYYA_FUZZ_UI_CASES", "1500"))
SUFFIX = uuid.uuid4().hex[:6]
TENANT = f"uifuzz-{SUFFIX}"
SLASHED = f"uifuzz-{SUFFIX}/spend"


@agent(name="fuzz-ui")
def work(item: Item) -> Any:
    if item.id.endswith("1"):
        raise ValueError(f"bad item {item.id!r}")
    return {"id": item.id}


@pytest.fixture
def seeded(rt: Runtime) -> dict[str, str]:
    result = work.map([{"id": f"i{n}"} for n in range(4)], tenant=TENANT)
    slashed = work.map([{"id": "s0"}], tenant=SLASHED)
    item = next(iter(result.items()))
    return {"run_id": str(result.run_id), "item_id": str(item.item_id), "slashed_run": str(slashed.run_id)}


def client(tokens: Tokens | None = None) -> TestClient:
    return TestClient(create_app(tokens), base_url="http://127.0.0.1:8177", raise_server_exceptions=False)


def test_a_tenant_id_ending_in_spend_is_its_own_tenant(seeded: dict[str, str]) -> None:
    tokens = Tokens(tenants={"mine": SLASHED, "theirs": TENANT})
    mine = client(tokens)
    headers = {"Authorization": "Bearer mine"}
    detail = mine.get(f"/api/tenants/{quote(SLASHED, safe='')}", headers=headers)
    assert detail.status_code == 200, detail.text
    assert detail.json()["tenant"] == SLASHED
    spend = mine.get(f"/api/tenants/{quote(SLASHED, safe='')}/spend", headers=headers)
    assert spend.status_code == 200, spend.text
    # The plain tenant stays out of reach of the slashed one's token, by either route
    assert mine.get(f"/api/tenants/{TENANT}", headers=headers).status_code == 403
    assert mine.get(f"/api/tenants/{TENANT}/spend", headers=headers).status_code == 403
    theirs = client(tokens).get(f"/api/tenants/{TENANT}/spend", headers={"Authorization": "Bearer theirs"})
    assert theirs.status_code == 200, theirs.text


HOSTILE = [
    "",
    " ",
    "%00",
    "%ff",
    "%ed%a0%80",
    "%2F",
    "..",
    "%2e%2e",
    "NaN",
    "-1",
    "0",
    "1e999",
    "99999999999999999999",
    "x" * 300,
    "%25",
    "'; DROP TABLE papayya.items; --",
    "テナント",
    "spend",
    "00000000-0000-0000-0000-000000000000",
    "fab8",
    "2026-13-01",
]


def test_bad_path_parameters_get_a_json_4xx(
    seeded: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    app = client()
    counts = {"cases": 0, "answered": 0, "refused": 0}
    reals = [seeded["run_id"], seeded["item_id"], seeded["run_id"][:8], TENANT, quote(SLASHED, safe="")]
    value = st.one_of(
        st.sampled_from(HOSTILE + reals),
        st.text(max_size=20).map(lambda s: quote(s, safe="")),
        st.from_regex(r"[0-9a-f-]{0,40}", fullmatch=True),
    )
    paths = st.sampled_from(
        [
            "/api/runs/{}",
            "/api/runs/{}/items",
            "/api/runs/{}/failures",
            "/api/items/{}",
            "/api/tenants/{}",
            "/api/tenants/{}/spend",
            "/api/runs",
            "/api/tenants",
        ]
    )
    query_keys = st.sampled_from(["limit", "top", "outcome", "after", "before", "tenant", "status", "token"])
    began = time.monotonic()

    @settings(max_examples=CASES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(paths, value, st.lists(st.tuples(query_keys, value), max_size=3))
    def case(path: str, param: str, query: list[tuple[str, str]]) -> None:
        url = path.format(param) + ("?" + "&".join(f"{k}={v}" for k, v in query) if query else "")
        answer = app.get(url)
        counts["cases"] += 1
        assert answer.status_code < 500, (url, answer.status_code, answer.text)
        if answer.status_code < 400:
            counts["answered"] += 1
            return
        counts["refused"] += 1
        assert answer.headers["content-type"].startswith("application/json"), (url, answer.text)
        assert answer.json()["error"], (url, answer.text)

    case()
    summary_line(
        f"UI fuzz: {counts['cases']:,} cases in {time.monotonic() - began:.1f} s "
        f"({counts['answered']:,} answered, {counts['refused']:,} refused as JSON 4xx)"
    )


def test_the_tenant_route_keeps_unencoded_slashes(seeded: dict[str, str]) -> None:
    """A client that sends the tenant's slash unencoded still reaches it (the route reads the rest)."""
    answer = client().get(f"/api/tenants/{SLASHED}")
    assert answer.status_code in (200, 404)
    papayya.tenants.get(SLASHED)
