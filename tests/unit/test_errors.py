"""What papayya raises to a Python caller is papayya's own, and the builtin the caller would expect."""

from __future__ import annotations

import pickle

import pytest

import papayya
from papayya import errors, validate

REFUSALS = [
    errors.ConfigError,
    errors.InputError,
    errors.TenantError,
    errors.BudgetError,
    errors.RateLimitError,
]


@pytest.mark.parametrize("cls", REFUSALS)
def test_a_refused_value_is_a_papayya_error_and_a_value_error(cls: type[Exception]) -> None:
    assert issubclass(cls, errors.InvalidInput)
    assert issubclass(cls, errors.PapayyaError)
    assert issubclass(cls, ValueError)


def test_not_found_is_a_papayya_error_and_a_lookup_error() -> None:
    assert issubclass(errors.NotFound, errors.PapayyaError)
    assert issubclass(errors.NotFound, LookupError)
    assert not issubclass(errors.NotFound, ValueError)


def test_control_flow_is_not_an_exception_a_bare_except_swallows() -> None:
    for cls in (errors.ControlFlow, errors.Paused, errors.AttemptAbandoned):
        assert not issubclass(cls, Exception)


def test_the_public_names_are_the_errors_module_s() -> None:
    for name in ("PapayyaError", "InvalidInput", "InputError", "TenantError", "NotFound", "BudgetError"):
        assert getattr(papayya, name) is getattr(errors, name)
        assert name in papayya.__all__


def test_the_validation_layer_s_refusals_are_caught_as_the_builtins() -> None:
    with pytest.raises(ValueError, match="lone surrogate"):
        validate.item_key(0, "\ud800")
    with pytest.raises(ValueError, match="control or unassigned character"):
        validate.tenant_id("a\x00")
    with pytest.raises(LookupError, match="is not a run id"):
        validate.uuid("x", "a run id")
    with pytest.raises(errors.InputError):
        validate.count(10**9, "limit", low=1, high=100)


@pytest.mark.parametrize(
    "exc",
    [
        errors.InputError("Item 'a' is bad.", item_key="a", index=3),
        errors.TenantError("Tenant id '' is empty."),
        errors.NotFound("No run 1."),
        errors.InvalidInput("Refused."),
    ],
)
def test_errors_pickle_across_processes_with_their_message(exc: errors.PapayyaError) -> None:
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is type(exc)
    assert str(back) == str(exc) == back.message
    if isinstance(exc, errors.InputError):
        assert isinstance(back, errors.InputError)
        assert (back.item_key, back.index) == ("a", 3)
