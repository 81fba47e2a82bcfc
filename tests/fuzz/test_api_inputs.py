"""The inputs found by fuzzing the Python API (issue 18): each is refused in one sentence, or kept as
given, before any SQL; never a driver's exception, never a value changed on the way in."""

from __future__ import annotations

import math
import uuid
from decimal import Decimal
from typing import Any

import pytest

import papayya
from papayya import InputError, Item, NotFound, PapayyaError, RunResult, TenantError, agent
from papayya.agent import prepare_items
from papayya.budgets import parse_amount
from papayya.config import load_settings
from papayya.errors import BudgetError, ConfigError
from papayya.money import usd
from papayya.runtime import Runtime
from papayya.validate import shown as label


@agent(name="tests.fuzz.inputs.echo")
def echo(item: Item) -> dict[str, Any]:
    return dict(item.input)


def one_line(exc: BaseException) -> str:
    message = str(exc)
    assert isinstance(exc, PapayyaError), f"{type(exc).__name__}: {message}"
    assert message, "an empty message"
    assert "\n" not in message, message
    return message


# -- items ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["submit", "map"])
@pytest.mark.parametrize(
    "items",
    [[{"id": "\ud800"}], [{"id": "a", "text": "x\udfffy"}], [{"id": "a", "\ud800": 1}]],
    ids=["key", "value", "input-key"],
)
def test_a_lone_surrogate_is_refused_naming_the_item(
    rt: Runtime, tenant: str, how: str, items: list[dict[str, Any]]
) -> None:
    with pytest.raises(InputError) as info:
        getattr(echo, how)(items, tenant=tenant)
    assert "surrogate" in one_line(info.value)


def test_an_item_whose_id_is_none_is_refused_not_named_none() -> None:
    with pytest.raises(InputError) as info:
        Item(None, {"x": 1})  # type: ignore[arg-type]
    assert "must be a string or an int" in one_line(info.value)
    assert Item(7).id == "7"


def test_an_int_id_too_long_to_print_is_refused() -> None:
    with pytest.raises(InputError):
        prepare_items([{"id": 10**5000}], max_bytes=1000)


def test_a_refusal_does_not_echo_a_huge_id() -> None:
    key = "x" * 100_000
    with pytest.raises(InputError) as info:
        prepare_items([{"id": key[:500]}, {"id": key[:500]}], max_bytes=1000)
    assert len(one_line(info.value)) < 300
    with pytest.raises(NotFound) as found:
        papayya.replay(run=key)
    assert len(one_line(found.value)) < 300


def test_numbers_come_back_as_they_were_given(rt: Runtime, tenant: str) -> None:
    given = {"huge": 1e308, "big": 1e16, "small": 1.5e-7, "tiniest": 5e-324, "int": 10**30, "half": 0.5}
    handle = echo.submit([{"id": "n", **given}], tenant=tenant)
    ((item_id, _key),) = rt.store.run_pending_items(handle.run_id, tenant)
    back = rt.store.item_detail(item_id, tenant)["input"]
    for name, value in given.items():
        assert type(back[name]) is type(value), name
        assert back[name] == value, name


def test_minus_zero_is_refused_since_the_store_keeps_it_as_zero() -> None:
    with pytest.raises(InputError) as info:
        prepare_items([{"id": "a", "x": [1, -0.0]}], max_bytes=1000)
    assert "$.x[1]" in one_line(info.value)
    assert "-0.0" in one_line(info.value)


def test_text_that_merely_looks_like_an_escaped_nul_is_accepted() -> None:
    ((_, text),) = prepare_items([{"id": "a", "path": "C:\\u0000\\x", "v": "1e+5"}], max_bytes=1000)
    assert "u0000" in text


# -- ids and names before SQL -----------------------------------------------------------------------


def test_clusters_refuses_a_tenant_with_a_nul(rt: Runtime) -> None:
    with pytest.raises(TenantError) as info:
        papayya.clusters(tenant="a\x00")
    one_line(info.value)
    with pytest.raises(InputError):
        papayya.clusters(agent="a\x00")
    with pytest.raises(NotFound):
        papayya.clusters(run_id="xx")
    with pytest.raises(InputError):
        papayya.clusters(limit=-1)


def test_run_result_load_refuses_a_malformed_run_id(rt: Runtime) -> None:
    with pytest.raises(NotFound) as info:
        RunResult.load("x", "t")
    assert "is not a run id" in one_line(info.value)
    with pytest.raises(NotFound):
        RunResult.load(str(uuid.uuid4()), "t")


def test_replay_refuses_a_nul_in_its_ids(rt: Runtime) -> None:
    for kwargs in (
        {"item": "a\x00"},
        {"run": str(uuid.uuid4()), "cluster": "c\x00"},
        {"tenant": "t\x00", "outcome": "failed"},
    ):
        with pytest.raises(PapayyaError) as info:
            papayya.replay(**kwargs)  # type: ignore[arg-type]
        one_line(info.value)


# -- amounts ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "amount",
    [
        10**5000,
        Decimal("1e-100000"),
        Decimal("NaN"),
        float("inf"),
        "1e999999999",
        10**13,
        "0.000000000000000000001",
        True,
    ],
    ids=label,
)
def test_an_amount_out_of_range_is_refused_in_one_sentence(amount: object) -> None:
    with pytest.raises(BudgetError) as info:
        parse_amount(amount)
    assert len(one_line(info.value)) < 300


def test_set_budget_with_a_huge_amount_is_a_budget_error(rt: Runtime, tenant: str) -> None:
    papayya.tenants.add(tenant)
    with pytest.raises(BudgetError):
        papayya.tenants.set_budget(tenant, 10**5000)
    assert papayya.tenants.get(tenant).budget_usd is None


def test_amounts_keep_their_value() -> None:
    assert parse_amount("$12.50") == Decimal("12.50")
    assert parse_amount(0.1 + 0.2) == Decimal("0.30000000000000004")
    assert parse_amount("1.500000000000000000000") == Decimal("1.5")
    assert str(parse_amount("-0")) == "0"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (10**5000, "$1.000E+5000"),
        (Decimal("1e-1000000"), "$1.000E-1000000"),
        (float("nan"), "$NaN"),
        (Decimal("0.00015021"), "$0.0001502"),
    ],
    ids=label,
)
def test_usd_shows_any_amount(value: object, shown: str) -> None:
    assert usd(value) == shown


# -- settings ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["inf", "1e18", "nan", "-1", "0"])
def test_a_lease_the_store_cannot_hold_is_refused_naming_the_range(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAPAYYA_LEASE_SECONDS", value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = one_line(info.value)
    assert "PAPAYYA_LEASE_SECONDS" in message
    assert "greater than 0 and at most 86,400" in message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("max_stalls", 10**30),
        ("pool_size", 10**6),
        ("max_input_bytes", 2**40),
        ("celery_unacked_seconds", math.inf),
        ("default_tenant", "t\x00"),
    ],
    ids=label,
)
def test_every_numeric_setting_is_bounded(name: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(**{name: value})
    assert name in one_line(info.value)
