"""The LLM client integrations without their extra, and instrument()'s bookkeeping (no database)."""

from __future__ import annotations

import importlib
import subprocess
import sys

import anthropic
import openai
import pytest

import papayya_anthropic
import papayya_openai


@pytest.mark.parametrize(
    ("module", "sdk"), [("papayya_openai", "openai"), ("papayya_anthropic", "anthropic")]
)
def test_a_missing_extra_names_what_to_install(
    monkeypatch: pytest.MonkeyPatch, module: str, sdk: str
) -> None:
    monkeypatch.setitem(sys.modules, sdk, None)  # as if the SDK were not installed
    monkeypatch.delitem(sys.modules, module)

    with pytest.raises(ImportError, match=rf"pip install 'papayya\[{sdk}\]'"):
        importlib.import_module(module)


def test_the_core_imports_no_llm_sdk() -> None:
    code = "import papayya, papayya.testing, sys; print(sorted({'openai', 'anthropic'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_openai_instrument_is_idempotent_reversible_and_follows_copies() -> None:
    with openai.OpenAI(api_key="test", base_url="http://127.0.0.1:9/v1") as client:
        original = client.chat.completions.create
        papayya_openai.instrument(papayya_openai.instrument(client))
        wrapped = client.chat.completions.create
        assert wrapped.__papayya_original__ == original  # type: ignore[attr-defined]

        copy = client.with_options(timeout=3)
        assert hasattr(copy.chat.completions.create, "__papayya_original__")
        assert hasattr(copy.responses.create, "__papayya_original__")

        papayya_openai.uninstrument(client)
        assert client.chat.completions.create == original
        assert not hasattr(client.with_options(timeout=3).chat.completions.create, "__papayya_original__")


def test_anthropic_instrument_is_reversible() -> None:
    with anthropic.Anthropic(api_key="test", base_url="http://127.0.0.1:9") as client:
        original = client.messages.create
        papayya_anthropic.instrument(client)
        assert client.messages.create != original
        papayya_anthropic.uninstrument(client)
        assert client.messages.create == original


@pytest.mark.parametrize("instrument", [papayya_openai.instrument, papayya_anthropic.instrument])
def test_instrument_refuses_what_is_not_its_client(instrument: object) -> None:
    with pytest.raises(TypeError, match="client"):
        instrument("not a client")  # type: ignore[operator]
