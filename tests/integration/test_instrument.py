"""What papayya.instrument does the same for every instrumented SDK: the same tests over OpenAI and Anthropic.

The provider-specific behaviour (ledger, replay as the SDK's type) is in test_openai.py and
test_anthropic.py, streams in test_streaming.py; these are the cases those files do not show.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import openai
import pytest

import papayya_anthropic
import papayya_openai
from papayya import agent, instrument
from papayya.runtime import Runtime
from papayya.testing import FakeProvider

HELLO = [{"role": "user", "content": "hello"}]


def openai_call(client: Any, **kwargs: Any) -> Any:
    return client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, **kwargs)


def anthropic_call(client: Any, **kwargs: Any) -> Any:
    return client.messages.create(model="claude-3-5-haiku-latest", max_tokens=64, messages=HELLO, **kwargs)


def openai_raw(client: Any) -> Any:
    return client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HELLO)


def anthropic_raw(client: Any) -> Any:
    return client.messages.with_raw_response.create(
        model="claude-3-5-haiku-latest", max_tokens=64, messages=HELLO
    )


@pytest.fixture(params=["openai", "anthropic"])
def sdk(request: pytest.FixtureRequest, fake: FakeProvider) -> Iterator[tuple[Any, Callable[..., Any], Any]]:
    """(instrumented client, a plain call, a raw-response call) for each SDK."""
    if request.param == "openai":
        with openai.OpenAI(base_url=fake.openai_url, api_key="test", max_retries=0) as c:
            yield papayya_openai.instrument(c), openai_call, openai_raw
    else:
        with anthropic.Anthropic(base_url=fake.anthropic_url, api_key="test", max_retries=0) as a:
            yield papayya_anthropic.instrument(a), anthropic_call, anthropic_raw


def test_a_callers_own_idempotency_key_is_sent_as_is_and_the_call_still_recorded(
    rt: Runtime, tenant: str, fake: FakeProvider, sdk: tuple[Any, Callable[..., Any], Any]
) -> None:
    client, call, _raw = sdk

    @agent
    def ask(item):
        call(client, extra_headers={"idempotency-key": "mine"})
        return {}

    result = ask.map([{"id": "a"}], tenant=tenant)

    assert result.llm_calls == 1
    assert fake.idempotency_keys == ["mine"]


def test_raw_response_calls_run_unrecorded_with_one_warning(
    rt: Runtime,
    tenant: str,
    fake: FakeProvider,
    sdk: tuple[Any, Callable[..., Any], Any],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, _call, raw = sdk
    monkeypatch.setattr(instrument, "_warned_raw", set())  # the warning is once per process

    @agent
    def ask(item):
        return {"status": raw(client).status_code}

    with caplog.at_level(logging.WARNING, logger="papayya"):
        result = ask.map([{"id": "a"}, {"id": "b"}], tenant=tenant)

    assert result.counts["succeeded"] == 2
    assert (result.llm_calls, fake.count) == (0, 2)
    assert fake.idempotency_keys == [None, None]
    (warning,) = [r for r in caplog.records if "with_raw_response" in r.getMessage()]
    assert "is not recorded" in warning.getMessage()
