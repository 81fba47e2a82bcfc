"""papayya.batch_api without a provider: the endpoint map and what client_for refuses."""

from __future__ import annotations

import sys

import pytest

from papayya.batch_api import ENDPOINTS, Provider, client_for
from papayya.errors import ConfigError


def test_endpoints_map_each_step_to_its_provider_and_batch_endpoint() -> None:
    assert ENDPOINTS == {
        "openai.chat": ("openai", "/v1/chat/completions"),
        "openai.responses": ("openai", "/v1/responses"),
        "openai.embeddings": ("openai", "/v1/embeddings"),
        "anthropic.messages": ("anthropic", "/v1/messages"),
    }


@pytest.mark.parametrize(
    ("provider", "variable"), [("openai", "OPENAI_API_KEY"), ("anthropic", "ANTHROPIC_API_KEY")]
)
def test_client_for_without_a_key_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, provider: Provider, variable: str
) -> None:
    monkeypatch.delenv(variable, raising=False)
    with pytest.raises(ConfigError, match=variable):
        client_for(provider, base_url=None)

    monkeypatch.setenv(variable, "from-the-environment")
    client = client_for(provider, base_url=None)
    assert client.provider == provider
    client.close()


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_client_for_without_the_sdk_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, provider: Provider
) -> None:
    monkeypatch.setitem(sys.modules, provider, None)  # import fails as if not installed
    with pytest.raises(ConfigError, match=rf"pip install 'papayya\[{provider}\]'"):
        client_for(provider, base_url=None, api_key="test")


def test_client_for_refuses_an_unknown_provider() -> None:
    with pytest.raises(ConfigError, match="'gemini'"):
        client_for("gemini", base_url=None, api_key="test")  # type: ignore[arg-type]
