from __future__ import annotations

from papayya import fingerprint
from papayya.models import ErrorCategory, Reason


def _raise(msg: str) -> BaseException:
    try:
        raise KeyError(msg)
    except KeyError as exc:
        return exc


def _raise_elsewhere(msg: str) -> BaseException:
    try:
        raise KeyError(msg)
    except KeyError as exc:
        return exc


def test_normalise_strips_ids_numbers_quotes_hex_and_timestamps() -> None:
    message = (
        "item 9f1c2e4a-1b2c-4d5e-8f90-123456789abc at 2026-11-27T12:00:01Z failed: "
        "'acme-corp' has 42 rows, ptr 0xdeadbeef, sha 0123456789abcdef0123"
    )
    assert fingerprint.normalise(message) == (
        "item <uuid> at <ts> failed: <str> has <n> rows, ptr <hex>, sha <hex>"
    )


def test_same_failure_shape_with_different_data_shares_a_fingerprint() -> None:
    a = fingerprint.failure(_raise("body of tenant-a item 1"), ErrorCategory.USER)
    b = fingerprint.failure(_raise("body of tenant-b item 2"), ErrorCategory.USER)
    assert a[0] == b[0]
    assert a[2] == "test_fingerprint.py:_raise"


def test_a_different_frame_or_category_is_a_different_cluster() -> None:
    base = fingerprint.failure(_raise("x"), ErrorCategory.USER)[0]
    assert fingerprint.failure(_raise_elsewhere("x"), ErrorCategory.USER)[0] != base
    assert fingerprint.failure(_raise("x"), ErrorCategory.PROVIDER)[0] != base


def test_degradation_fingerprint_uses_codes_and_paths_not_messages() -> None:
    one = [Reason(code="schema.extra_field", path="compnay_size", message="tenant A data")]
    two = [Reason(code="schema.extra_field", path="compnay_size", message="tenant B data")]
    assert fingerprint.degradation(one) == fingerprint.degradation(two)
    assert fingerprint.degradation(one) != fingerprint.degradation([Reason(code="retrieval_empty")])
