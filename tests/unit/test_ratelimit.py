"""Rate limits without a database: reading a 429's Retry-After, and bad input refused before any I/O."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from papayya.errors import RateLimitError, TenantError
from papayya.ratelimit import RateLimiter, retry_after_of


class NoStore:
    """A store that must not be touched: every call fails the test."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the store was called ({name}) for input that should have been refused")


@pytest.fixture
def limiter() -> RateLimiter:
    return RateLimiter(NoStore())  # type: ignore[arg-type]


class Response:
    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers  # a plain dict: names in any case (the SDKs' Headers ignore case)


class ProviderError(Exception):
    """Shaped like the SDKs' APIStatusError: ``status_code`` and a ``response`` with headers.

    The real SDK errors are read in tests/integration/test_ratelimit.py.
    """

    def __init__(self, status: int, headers: dict[str, str]) -> None:
        super().__init__(f"HTTP {status}")
        self.status_code = status
        self.response: Response | None = Response(headers)


@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [
        (429, {"retry-after": "2"}, 2.0),
        (429, {"Retry-After": "0.5"}, 0.5),
        (429, {"retry-after-ms": "1500", "retry-after": "9"}, 1.5),  # the precise one wins
        (429, {"retry-after-ms": "soon", "retry-after": "3"}, 3.0),
        (429, {"retry-after": "-4"}, 0.0),
        (429, {"retry-after": "nan"}, None),
        (429, {"retry-after": "in a while"}, None),
        (429, {}, None),
        (500, {"retry-after": "2"}, None),
        (503, {"retry-after": "2"}, None),
    ],
)
def test_retry_after_is_read_from_a_429_only(
    status: int, headers: dict[str, str], expected: float | None
) -> None:
    assert retry_after_of(ProviderError(status, headers)) == expected


def test_retry_after_as_an_http_date_is_the_seconds_until_then() -> None:
    later = datetime.now(UTC) + timedelta(seconds=30)
    seconds = retry_after_of(ProviderError(429, {"retry-after": format_datetime(later, usegmt=True)}))
    assert seconds is not None
    assert 25 <= seconds <= 31
    past = datetime.now(UTC) - timedelta(hours=1)
    assert retry_after_of(ProviderError(429, {"retry-after": format_datetime(past, usegmt=True)})) == 0.0


def test_errors_that_are_not_provider_answers_have_no_retry_after() -> None:
    assert retry_after_of(ValueError("boom")) is None
    assert retry_after_of(KeyboardInterrupt()) is None
    odd = ProviderError(429, {})
    odd.response = None
    assert retry_after_of(odd) is None


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"requests_per_minute": 0}, "requests_per_minute must be above 0, not 0"),
        ({"requests_per_minute": -5}, "requests_per_minute must be above 0, not -5"),
        ({"tokens_per_minute": 2.5}, "tokens_per_minute must be a whole number of tokens per minute"),
        ({"requests_per_minute": True}, "must be a whole number of requests per minute, not True"),
        ({"requests_per_minute": "10"}, "not '10'"),
        ({"requests_per_minute": 2**31}, "must be at most 2,147,483,647"),
        ({}, "needs requests_per_minute, tokens_per_minute or both"),
    ],
)
def test_bad_limits_are_refused_with_one_sentence(
    limiter: RateLimiter, kwargs: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(RateLimitError) as info:
        limiter.set_limit("openai", **kwargs)
    assert fragment in info.value.message
    assert "\n" not in info.value.message
    assert info.value.message.endswith(".")


@pytest.mark.parametrize(
    ("provider", "model", "fragment"),
    [
        ("", "*", "The provider is empty"),
        ("   ", "*", "The provider is empty"),
        (None, "*", "The provider is None"),
        ("open:ai", "*", "Provider 'open:ai' is not usable"),
        ("*", "*", "Provider '*' is not usable"),
        ("open ai", "*", "Provider 'open ai' is not usable"),
        ("openai", "", "Model '' is not usable"),
        ("openai", " gpt-4o", "Model ' gpt-4o' is not usable"),
        ("openai", "gpt\x1b", "is not usable"),
    ],
)
def test_bad_keys_are_refused(limiter: RateLimiter, provider: Any, model: Any, fragment: str) -> None:
    with pytest.raises(RateLimitError, match=r"is not usable|is empty|is None") as info:
        limiter.set_limit(provider, model, requests_per_minute=1)
    assert fragment in info.value.message
    with pytest.raises(RateLimitError):
        limiter.remove_limit(provider, model)


def test_a_bad_tenant_is_refused_like_everywhere_else(limiter: RateLimiter) -> None:
    with pytest.raises(TenantError, match="leading or trailing whitespace"):
        limiter.set_limit("openai", tenant_id=" t47", requests_per_minute=1)


@pytest.mark.parametrize("tokens", [-1, 1.5, None, "5", True])
def test_a_bad_token_estimate_is_refused(limiter: RateLimiter, tokens: Any) -> None:
    with pytest.raises(RateLimitError, match="token estimate must be a whole number >= 0"):
        limiter.acquire("openai", "gpt-4o", "t47", tokens)
    with pytest.raises(RateLimitError, match="token estimate must be a whole number >= 0"):
        limiter.settle("openai", "gpt-4o", "t47", tokens, 0)


@pytest.mark.parametrize("seconds", [-1, math.nan, math.inf, "2", None])
def test_a_bad_retry_after_is_refused(limiter: RateLimiter, seconds: Any) -> None:
    with pytest.raises(RateLimitError, match="Retry-After must be a number of seconds >= 0"):
        limiter.close("openai", "gpt-4o", seconds)


def test_a_zero_retry_after_closes_nothing(limiter: RateLimiter) -> None:
    limiter.close("openai", "gpt-4o", 0)  # NoStore: no database call


@pytest.mark.parametrize(("period", "refresh"), [(0, 1), (-60, 1), (math.inf, 1), (60, -1), (60, math.nan)])
def test_a_bad_period_or_refresh_is_refused(period: float, refresh: float) -> None:
    with pytest.raises(RateLimitError, match="must be a number of seconds"):
        RateLimiter(NoStore(), period=period, refresh=refresh)  # type: ignore[arg-type]
