from __future__ import annotations

import pytest

from papayya import TenantError
from papayya.tenants import validate_tenant_id


@pytest.mark.parametrize(
    "tenant", ["t47", "t'; DROP TABLE papayya.items; --", "テナント-ü", "a" * 128, "Acme Inc."]
)
def test_printable_ids_are_accepted_as_they_are(tenant: str) -> None:
    assert validate_tenant_id(tenant) == tenant


@pytest.mark.parametrize(
    ("tenant", "fragment"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("x" * 10_000, "is 10000 characters; use at most 128"),
        (" t47", "leading or trailing whitespace"),
        ("t\n47", "control"),
        ("t\x0047", "control"),
        (47, "must be a string"),
    ],
)
def test_unusable_ids_are_refused_with_a_sentence(tenant: object, fragment: str) -> None:
    with pytest.raises(TenantError) as info:
        validate_tenant_id(tenant)
    assert fragment in str(info.value)
