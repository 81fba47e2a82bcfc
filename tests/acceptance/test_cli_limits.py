"""``papayya limits``, run the way a user runs it: ``python -m papayya`` in a subprocess.

The limits table is shared by the whole session database, so each test works on a provider name of
its own and removes its limits afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from papayya.ratelimit import RateLimiter
from papayya.runtime import Runtime
from tests.acceptance.test_cli import assert_one_sentence, ok_json, ok_text, papayya, papayya_all


@pytest.fixture
def provider(rt: Runtime) -> Iterator[str]:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    yield name
    limiter = RateLimiter(rt.store)
    for limit in limiter.list_limits():
        if limit.provider == name:
            limiter.remove_limit(limit.provider, limit.model, limit.tenant_id)


def mine(listing: dict[str, Any], provider: str) -> list[dict[str, Any]]:
    return [x for x in listing["limits"] if x["provider"] == provider]


def test_limits_set_list_and_remove(cli_env: dict[str, str], provider: str) -> None:
    # Set a provider-wide limit and a per-tenant limit on one model
    text = ok_text(papayya(cli_env, "limits", "set", provider, "--rpm", "500"))
    assert f"Limited {provider} to 500 requests per minute" in text
    limit = ok_json(
        papayya(
            cli_env,
            "limits",
            "set",
            f"{provider}:gpt-4o-mini",
            "--tenant",
            "t47",
            "--rpm",
            "30",
            "--tpm",
            "20000",
            "--json",
        )
    )
    assert limit["provider"] == provider
    assert (limit["model"], limit["tenant"]) == ("gpt-4o-mini", "t47")
    assert (limit["requests_per_minute"], limit["tokens_per_minute"]) == (30, 20000)
    # A model name may itself hold colons (fine-tuned and Bedrock model ids do)
    ok_text(papayya(cli_env, "limits", "set", f"{provider}:ft:gpt-4o:acme::x1", "--tpm", "1000"))

    listing, table = papayya_all(cli_env, ["limits", "list", "--json"], ["limits", "list"])
    rows = mine(ok_json(listing), provider)
    assert [(r["model"], r["tenant"]) for r in rows] == [
        ("*", "*"),
        ("ft:gpt-4o:acme::x1", "*"),
        ("gpt-4o-mini", "t47"),
    ]
    assert [(r["requests_available"], r["tokens_available"]) for r in rows] == [
        (500, None),
        (None, 1000),
        (30, 20000),
    ]
    lines = [line.split() for line in ok_text(table).splitlines() if line.startswith(provider)]
    assert lines[0][:6] == [provider, "every", "model", "every", "tenant", "500"]
    assert lines[2][:5] == [provider, "gpt-4o-mini", "t47", "30", "20,000"]

    # Setting a key again replaces its limits: the requests limit is lifted
    replaced = ok_json(papayya(cli_env, "limits", "set", provider, "--tpm", "9000", "--json"))
    assert (replaced["requests_per_minute"], replaced["tokens_per_minute"]) == (None, 9000)

    # Remove the tenant's limit; removing it again says there is none
    removed = ok_text(papayya(cli_env, "limits", "remove", f"{provider}:gpt-4o-mini", "--tenant", "t47"))
    assert removed.strip() == f"Removed the rate limit on {provider}:gpt-4o-mini for tenant 't47'."
    assert_one_sentence(
        papayya(cli_env, "limits", "remove", f"{provider}:gpt-4o-mini", "--tenant", "t47"),
        f"There is no rate limit on {provider}:gpt-4o-mini for tenant 't47'",
        "`papayya limits list`",
    )
    rows = mine(ok_json(papayya(cli_env, "limits", "list", "--json")), provider)
    assert [r["model"] for r in rows] == ["*", "ft:gpt-4o:acme::x1"]


def test_a_closure_after_a_429_is_listed(rt: Runtime, cli_env: dict[str, str], provider: str) -> None:
    RateLimiter(rt.store).close(provider, "gpt-4o", 120)

    listing, table = papayya_all(cli_env, ["limits", "list", "--json"], ["limits", "list"])

    (closure,) = [c for c in ok_json(listing)["closures"] if c["provider"] == provider]
    assert closure["model"] == "gpt-4o"
    assert closure["closed_until"].endswith("+00:00")
    text = ok_text(table)
    assert "closed after a 429" in text
    assert any(line.split()[:2] == [provider, "gpt-4o"] for line in text.splitlines())


def test_bad_limits_get_one_sentence(cli_env: dict[str, str], provider: str) -> None:
    results = papayya_all(
        cli_env,
        ["limits", "set", provider],
        ["limits", "set", provider, "--rpm", "0"],
        ["limits", "set", provider, "--tpm", "lots"],
        ["limits", "set", f"{provider}:", "--rpm", "5"],
        ["limits", "set", "*", "--rpm", "5"],
        ["limits", "set", provider, "--tenant", " t47", "--rpm", "5"],
        ["limits", "set", provider, "--rpm", str(2**31)],
        ["limits", "remove", provider],
    )
    expected = [
        ("Nothing to set: give --rpm, --tpm or both", "papayya limits set --help"),
        ("'--rpm'", "0 is not in the range x>=1"),
        ("'--tpm'", "'lots' is not a valid integer"),
        (f"'{provider}:' is not PROVIDER or PROVIDER:MODEL", "openai:gpt-4o-mini"),
        ("Provider '*' is not usable",),
        ("leading or trailing whitespace",),
        ("requests_per_minute must be at most 2,147,483,647",),
        (f"There is no rate limit on {provider};",),
    ]
    for result, fragments in zip(results, expected, strict=True):
        assert_one_sentence(result, *fragments)
    assert mine(ok_json(papayya(cli_env, "limits", "list", "--json")), provider) == []  # nothing was set
