"""What batch mode sends a provider: the request as its endpoint takes it."""

from __future__ import annotations

from openai import NOT_GIVEN

from papayya.batches import request_body


def test_the_request_body_drops_the_sdks_own_options_and_merges_extra_body() -> None:
    body = request_body(
        {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "hi"}],
            "temperature": NOT_GIVEN,
            "extra_headers": {"Idempotency-Key": "papayya-1"},
            "extra_query": {"x": 1},
            "timeout": 30,
            "extra_body": {"service_tier": "flex"},
        }
    )
    assert body == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}],
        "service_tier": "flex",
    }


def test_pydantic_and_other_values_become_json() -> None:
    from pydantic import BaseModel

    class Schema(BaseModel):
        name: str

    body = request_body({"model": "m", "metadata": Schema(name="a"), "n": 2})
    assert body == {"model": "m", "metadata": {"name": "a"}, "n": 2}
