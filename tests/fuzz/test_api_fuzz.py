"""Property-based fuzzing of papayya's Python entrances (Hypothesis).

Generated inputs go to ``map()``/``submit()`` (items, keys, inputs, tenants, options),
``papayya.clusters()``, ``RunResult.load``, ``papayya.replay``, ``tenants.set_budget`` and
``parse_amount``, and the settings (``load_settings``/``papayya.configure`` and ``PAPAYYA_*``
variables). For every case one of two things holds:

- a clear refusal: a ``PapayyaError`` whose message is one non-empty line of bounded length, and
  nothing already recorded changed (row counts of every papayya table, and a hash of the tenants and
  of the fuzzed tenants' items, are the same before and after);
- or success; an item that was recorded reads back exactly as it was given (types, signs, text).

Never another exception. The number of cases run is printed at the end of the module.

CI runs about 5,000 cases in a fixed (derandomized) order, well under two minutes on two cores. For a
longer, random run set ``PAPAYYA_FUZZ_SCALE`` (a multiplier of every test's case count)::

    PAPAYYA_FUZZ_SCALE=20 .venv/bin/python -m pytest -q -p no:cacheprovider tests/fuzz/test_api_fuzz.py
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

import papayya
from papayya import Item, PapayyaError, RunResult, agent
from papayya.agent import prepare_items
from papayya.budgets import parse_amount
from papayya.config import RANGES, load_settings
from papayya.money import usd
from papayya.runtime import Runtime
from tests.conftest import summary_line

SCALE = float(os.environ.get("PAPAYYA_FUZZ_SCALE", "1"))
RANDOM = SCALE != 1  # an on-demand run explores; CI replays the same cases every time
RUN: dict[str, int] = {}  # test name -> cases run


def profile(cases: int) -> Callable[[Any], Any]:
    return settings(
        max_examples=max(1, int(cases * SCALE)),
        deadline=None,
        derandomize=not RANDOM,
        database=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
    )


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    began = time.monotonic()
    yield
    took = time.monotonic() - began
    parts = ", ".join(f"{k} {v:,}" for k, v in RUN.items())
    summary_line(f"API fuzz: {sum(RUN.values()):,} cases in {took:.1f} s ({parts})")


def counted(name: str) -> None:
    RUN[name] = RUN.get(name, 0) + 1


# -- strategies -------------------------------------------------------------------------------------

# All of Unicode, lone surrogates included, plus NUL: what a fuzzer (or a bad decoder) produces.
TEXT = st.text(st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF), max_size=12)
LONG_TEXT = st.builds(
    lambda c, n: c * n, st.sampled_from(["x", "\x00", "é", "\ud800"]), st.integers(100, 3000)
)
ANY_TEXT = st.one_of(TEXT, TEXT, LONG_TEXT, st.sampled_from(["", " ", "a\x00", "\udfff", "ok", "a" * 129]))
FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e308, -1e308, 1e16, 5e-324, -0.0, 0.0, 1.5e-7, 123456789012345680.0]),
)
INTS = st.one_of(st.integers(), st.sampled_from([30, 40, 4299, 5000]).map(lambda n: 10**n * (-1) ** n))
SCALARS = st.one_of(st.none(), st.booleans(), INTS, FLOATS, ANY_TEXT)
JSONISH = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(ANY_TEXT, inner, max_size=3)),
    max_leaves=8,
)
KEYS = st.one_of(ANY_TEXT, INTS, st.none(), st.booleans(), FLOATS, st.just(b"id"))
NUMBERS = st.one_of(
    INTS,
    FLOATS,
    st.decimals(),
    ANY_TEXT,
    st.none(),
    st.booleans(),
    st.just([1]),
    st.sampled_from(["inf", "-inf", "nan", "1e18", "1e-18", "0", "-0", "5", "$12.50", " 7 ", "1e999999999"]),
)
UUIDISH = st.one_of(
    st.uuids(), st.uuids().map(str), st.uuids().map(lambda u: u.hex.upper()), ANY_TEXT, INTS, st.none()
)


@st.composite
def items(draw: st.DrawFn) -> list[Any]:
    """1-3 items as dicts, Items (built inside the case: Item(None) refuses) or odd objects."""
    out: list[Any] = []
    for _ in range(draw(st.integers(1, 3))):
        key = draw(KEYS)
        data = draw(st.dictionaries(ANY_TEXT, JSONISH, max_size=4))
        kind = draw(st.sampled_from(["dict", "dict", "item", "other"]))
        if kind == "dict":
            out.append({"id": key, **{k: v for k, v in data.items() if k != "id"}})
        elif kind == "item":
            out.append(("item", key, data))
        else:
            out.append(draw(st.sampled_from([42, "text", None, object()])))
    return out


def built(raw: list[Any]) -> list[Any]:
    return [Item(r[1], r[2]) if isinstance(r, tuple) else r for r in raw]


# -- what "nothing changed" means --------------------------------------------------------------------


class Ledger:
    """Row counts of every papayya table, plus a hash of the tenants and of some tenants' items."""

    def __init__(self, url: str, tenants: list[str]) -> None:
        self.conn = psycopg.connect(url, autocommit=True)
        self.tenants = tenants
        names = [
            r[0]
            for r in self.conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'papayya' ORDER BY tablename"
            )
        ]
        counts = sql.SQL(", ").join(
            sql.SQL("(SELECT count(*) FROM papayya.{})").format(sql.Identifier(n)) for n in names
        )
        self.query = sql.SQL(
            "SELECT {counts}, "
            "(SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t.tenant_id), '')) "
            " FROM papayya.tenants t), "
            "(SELECT md5(coalesce(string_agg(i::text, ',' ORDER BY i.item_id), '')) "
            " FROM papayya.items i WHERE i.tenant_id = ANY(%s))"
        ).format(counts=counts)

    def checksum(self) -> tuple[Any, ...]:
        row = self.conn.execute(self.query, (self.tenants,)).fetchone()
        assert row is not None
        return tuple(row)

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def ledger(rt: Runtime, tenant: str, database_url: str) -> Iterator[Ledger]:
    watched = Ledger(database_url, [tenant])
    yield watched
    watched.close()


def refused_or_ok(call: Callable[[], Any], ledger: Ledger | None = None) -> tuple[bool, Any]:
    """Run ``call``: (True, its value), or (False, the refusal) once it is checked to be a clean one."""
    before = ledger.checksum() if ledger is not None else None
    try:
        return True, call()
    except PapayyaError as exc:
        refusal = exc
    message = str(refusal)
    assert message, type(refusal).__name__
    assert "\n" not in message, repr(message)
    assert len(message) <= 600, f"{len(message)} characters: {message[:200]}..."
    if ledger is not None:
        assert ledger.checksum() == before, f"a refusal changed what is recorded: {message}"
    return False, refusal


def same_json(given: Any, back: Any) -> bool:
    """Equal as JSON values, with float vs int, and -0.0 vs 0.0, told apart."""
    if isinstance(given, float):
        return type(back) is float and back == given and math.copysign(1, back) == math.copysign(1, given)
    if isinstance(given, bool) or given is None or isinstance(given, int | str):
        return type(back) is type(given) and back == given
    if isinstance(given, list):
        return isinstance(back, list) and len(back) == len(given) and all(map(same_json, given, back))
    if isinstance(given, dict):
        return (
            isinstance(back, dict)
            and back.keys() == given.keys()
            and all(same_json(v, back[k]) for k, v in given.items())
        )
    return False


@agent(name="tests.fuzz.api.echo")
def echo(item: Item) -> dict[str, Any]:
    return {"n": len(item.input)}


# -- items ------------------------------------------------------------------------------------------


@profile(1500)
@given(raw=items())
def test_prepare_items_refuses_or_keeps_every_value(raw: list[Any]) -> None:
    counted("prepare_items")
    ok, value = refused_or_ok(lambda: prepare_items(built(raw), max_bytes=1_048_576))
    if ok:
        assert len(value) == len(raw)


@profile(500)
@given(
    raw=items(),
    tenant_id=st.one_of(st.none(), ANY_TEXT),
    concurrency=st.one_of(st.integers(-3, 20_000), FLOATS, st.just("4")),
    priority=st.one_of(st.integers(), st.none()),
    budget=st.one_of(st.none(), NUMBERS),
    run_name=st.one_of(st.none(), ANY_TEXT),
)
def test_submit_refuses_cleanly_or_records_exactly(
    rt: Runtime,
    tenant: str,
    ledger: Ledger,
    raw: list[Any],
    tenant_id: str | None,
    concurrency: Any,
    priority: Any,
    budget: Any,
    run_name: Any,
) -> None:
    counted("submit")
    who = tenant if tenant_id is None else tenant_id
    ok, handle = refused_or_ok(
        lambda: echo.submit(
            built(raw),
            tenant=who,
            concurrency=concurrency,
            priority=priority if priority is not None else 0,
            budget_usd=budget,
            run_name=run_name,
        ),
        ledger,
    )
    if not ok:
        return
    given = {
        str(r["id"]) if isinstance(r, dict) else str(r[1]): (r if isinstance(r, dict) else r[2]) for r in raw
    }
    for item_id, key in rt.store.run_pending_items(handle.run_id, who):
        back = rt.store.item_detail(item_id, who)["input"]
        expected = given[key]
        if isinstance(expected, dict) and "id" in expected and not isinstance(expected.get("id"), str | int):
            continue  # pragma: no cover - ids are str or int when accepted
        assert same_json(expected, back), (expected, back)


@profile(60)
@given(raw=items())
def test_map_refuses_cleanly_or_runs(rt: Runtime, tenant: str, ledger: Ledger, raw: list[Any]) -> None:
    counted("map")
    ok, result = refused_or_ok(lambda: echo.map(built(raw), tenant=tenant), ledger)
    if ok:
        assert result.counts["succeeded"] == len(raw)


# -- ids, names and reads ---------------------------------------------------------------------------


@profile(400)
@given(
    run_id=st.one_of(st.none(), UUIDISH),
    tenant_id=st.one_of(st.none(), ANY_TEXT),
    agent_name=st.one_of(st.none(), ANY_TEXT),
    limit=st.one_of(st.integers(-5, 10**6), st.just(10**30), FLOATS),
)
def test_clusters(
    rt: Runtime, ledger: Ledger, run_id: Any, tenant_id: Any, agent_name: Any, limit: Any
) -> None:
    counted("clusters")
    ok, found = refused_or_ok(
        lambda: papayya.clusters(run_id=run_id, tenant=tenant_id, agent=agent_name, limit=limit), ledger
    )
    if ok:
        assert isinstance(found, list)


@profile(400)
@given(run_id=UUIDISH, tenant_id=ANY_TEXT, top=st.one_of(st.just(10), st.integers(-5, 10**9)))
def test_run_result_load(rt: Runtime, ledger: Ledger, run_id: Any, tenant_id: Any, top: int) -> None:
    counted("RunResult.load")
    ok, _ = refused_or_ok(lambda: RunResult.load(run_id, tenant_id, top=top), ledger)
    assert not ok  # no generated run exists


@profile(400)
@given(
    which=st.sampled_from(["item", "run", "tenant"]),
    ident=UUIDISH,
    tenant_id=st.one_of(st.none(), ANY_TEXT),
    outcome=st.one_of(st.none(), st.sampled_from(["failed", "degraded", "queued"]), ANY_TEXT),
    cluster=st.one_of(st.none(), ANY_TEXT),
    keys=st.one_of(st.none(), st.lists(ANY_TEXT, max_size=3), ANY_TEXT),
)
def test_replay(
    rt: Runtime, ledger: Ledger, which: str, ident: Any, tenant_id: Any, outcome: Any, cluster: Any, keys: Any
) -> None:
    counted("replay")
    args: dict[str, Any] = {
        "tenant": tenant_id,
        "outcome": outcome,
        "cluster": cluster,
        "keys": keys,
        "execute": False,
    }
    if which != "tenant":
        args[which] = ident
        args.pop("outcome") if which == "item" else None
        args.pop("cluster") if which == "item" else None
        args.pop("keys") if which == "item" else None
    refused_or_ok(lambda: papayya.replay(**args), ledger)


# -- money ------------------------------------------------------------------------------------------


@profile(800)
@given(amount=NUMBERS)
def test_parse_amount_and_usd(amount: Any) -> None:
    counted("parse_amount")
    ok, value = refused_or_ok(lambda: parse_amount(amount))
    if ok:
        assert isinstance(value, Decimal)
        assert value.is_finite()
        assert Decimal(0) <= value <= Decimal(10) ** 12
        assert usd(value).startswith("$")


@profile(300)
@given(amount=NUMBERS, period=st.one_of(st.none(), st.sampled_from(["month", "day", "total"]), TEXT))
def test_set_budget(
    rt: Runtime, tenant: str, ledger: Ledger, monkeypatch: pytest.MonkeyPatch, amount: Any, period: Any
) -> None:
    counted("set_budget")
    # No worker holds budget chunks here: skip the one-second wait for them to expire.
    monkeypatch.setattr(rt.control, "settle_change", lambda: None)
    papayya.tenants.add(tenant, exist_ok=True)
    ledger.tenants = [tenant]
    ok, result = refused_or_ok(lambda: papayya.tenants.set_budget(tenant, amount, period), ledger)
    if ok and amount is not None:
        assert papayya.tenants.get(tenant).budget_usd == result["budget_usd"]


# -- settings ---------------------------------------------------------------------------------------

SETTINGS = [*RANGES, "backend", "default_tenant", "home", "database_url", "unknown_tenants", "progress"]


@profile(600)
@given(name=st.sampled_from(SETTINGS), value=st.one_of(NUMBERS, ANY_TEXT))
def test_settings_explicit(name: str, value: Any) -> None:
    counted("load_settings")
    ok, loaded = refused_or_ok(lambda: load_settings(**{name: value}))
    if ok and name in RANGES:
        low, high, _ = RANGES[name]
        got = getattr(loaded, name)
        assert math.isfinite(got)
        assert low <= got <= high


@profile(300)
@given(
    name=st.sampled_from(SETTINGS),
    value=st.one_of(
        st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12),
        st.sampled_from(["inf", "-inf", "nan", "1e18", "1e308", "0", "-1", "1e-300", "99999999999999999999"]),
    ),
)
def test_settings_from_the_environment(name: str, value: str) -> None:
    counted("PAPAYYA_*")
    var = f"PAPAYYA_{name.upper()}"
    old = os.environ.get(var)
    os.environ[var] = value
    try:
        refused_or_ok(load_settings)
    finally:
        if old is None:
            del os.environ[var]
        else:
            os.environ[var] = old


@profile(100)
@given(name=st.sampled_from(list(RANGES)), value=NUMBERS)
def test_configure_refuses_without_changing_anything(name: str, value: Any) -> None:
    counted("configure")
    before = papayya.config.explicit_overrides()
    try:
        ok, _ = refused_or_ok(lambda: papayya.configure(**{name: value}))
        if not ok:
            assert papayya.config.explicit_overrides() == before
    finally:
        papayya.reset(forget_configuration=True)
