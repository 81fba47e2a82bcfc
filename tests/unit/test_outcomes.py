from __future__ import annotations

import logging

import pytest
from pydantic import BaseModel

from papayya.models import Reason
from papayya.outcomes import is_empty, run_checks, validate_output


class Address(BaseModel):
    city: str


class Company(BaseModel):
    name: str
    size: int
    address: Address


def test_valid_output_has_no_reasons() -> None:
    data, reasons = validate_output(Company, {"name": "a", "size": 3, "address": {"city": "x"}})
    assert reasons == []
    assert data == {"name": "a", "size": 3, "address": {"city": "x"}}


def test_hallucinated_field_name_is_degraded_with_its_path() -> None:
    _, reasons = validate_output(
        Company, {"name": "a", "compnay_size": 3, "address": {"city": "x", "zip_cod": "1"}}
    )
    found = {(r.code, r.path) for r in reasons}
    assert ("schema.extra_field", "compnay_size") in found
    assert ("schema.extra_field", "address.zip_cod") in found
    assert ("schema.missing_field", "size") in found


def test_wrong_type_is_degraded_with_its_path() -> None:
    _, reasons = validate_output(Company, {"name": "a", "size": "many", "address": {"city": "x"}})
    assert [(r.code, r.path) for r in reasons] == [("schema.invalid", "size")]


def test_a_model_instance_is_checked_too() -> None:
    _, reasons = validate_output(Company, Company(name="a", size=1, address=Address(city="x")))
    assert reasons == []


@pytest.mark.parametrize("value", [None, "", [], {}, ()])
def test_empty_outputs(value: object) -> None:
    assert is_empty(value)


@pytest.mark.parametrize("value", [0, False, "x", [0], {"a": None}])
def test_non_empty_outputs(value: object) -> None:
    assert not is_empty(value)


def test_checks_return_reasons_and_a_raising_check_is_a_pass(caplog: pytest.LogCaptureFixture) -> None:
    def too_short(output: object, item: object) -> str | None:
        return "summary too short"

    def fine(output: object, item: object) -> None:
        return None

    def broken(output: object, item: object) -> None:
        raise RuntimeError("bug in the check")

    def custom(output: object, item: object) -> Reason:
        return Reason(code="custom", path="summary")

    with caplog.at_level(logging.ERROR, logger="papayya.outcomes"):
        reasons = run_checks([too_short, fine, broken, custom], {}, None)
    assert [(r.code, r.path, r.message) for r in reasons] == [
        ("check", "too_short", "summary too short"),
        ("custom", "summary", ""),
    ]
    assert "check broken raised" in caplog.text
