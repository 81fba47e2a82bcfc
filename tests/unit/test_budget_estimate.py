"""What papayya reserves for an LLM call before sending it: the prompt's worst case (no database)."""

from __future__ import annotations

import base64
import struct
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest

from papayya.errors import BudgetError
from papayya.ledger import (
    IMAGE_TOKENS_ANTHROPIC,
    IMAGE_TOKENS_GPT_4O_MINI,
    IMAGE_TOKENS_OPENAI,
    estimate,
    estimate_usage,
    prompt_tokens,
    text_tokens,
)
from papayya.pricing import Usage

# $1 per 1,000 tokens either way, so a cost reads as tokens / 1,000.
PRICES = {("openai", "gpt-4o"): {"input_mtok": Decimal(1000), "output_mtok": Decimal(1000)}}
CTX: Any = SimpleNamespace(
    runtime=SimpleNamespace(settings=SimpleNamespace(default_max_output_tokens=4096)), price_overrides=PRICES
)
PNG = base64.b64encode(b"\x89PNG" + bytes(750_000)).decode()  # a 1 MB base64 payload


def chat(content: Any, model: str = "gpt-4o") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 50}


def test_ascii_counts_one_token_per_two_characters() -> None:
    assert text_tokens("a" * 100) == 50
    assert text_tokens("abc") == 2
    # Four characters a token is typical for English: the estimate is twice that at least.
    sentence = "Summarise the attached quarterly report in three bullet points."
    assert text_tokens(sentence) >= 2 * (len(sentence) // 4)


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("漢字" * 50, 300),  # CJK: 3 bytes a character; real tokenizers use 1-2
        ("こんにちは", 15),
        ("Привет", 12),  # Cyrillic: 2 bytes a letter
        ("👍", 4),  # an emoji: 4 bytes
        ("👨\u200d👩\u200d👧", 18),  # a family: 3 emoji and 2 zero-width joiners
        ("café", 4),  # "caf" at 2, "é" at 2
    ],
)
def test_other_scripts_count_one_token_per_utf8_byte(text: str, tokens: int) -> None:
    # Byte-level tokenizers never use more than one token a byte, so this is a bound for them.
    assert text_tokens(text) == tokens
    assert text_tokens(text) >= len(text)


def test_a_dense_prompt_reserves_far_more_than_half_its_characters() -> None:
    japanese = "この文書を要約してください。" * 40
    assert prompt_tokens(chat(japanese)) >= 3 * len(japanese)
    assert prompt_tokens(chat("x" * len(japanese))) < len(japanese)


def test_an_openai_image_costs_its_per_image_maximum_not_its_base64() -> None:
    text_only = prompt_tokens(chat([{"type": "text", "text": "what is this?"}]))
    with_image = prompt_tokens(
        chat(
            [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "high"}},
            ]
        )
    )
    assert IMAGE_TOKENS_OPENAI <= with_image - text_only <= IMAGE_TOKENS_OPENAI + 10
    assert with_image < len(PNG) // 100  # counted as text, the payload alone would be 500,000 tokens


def test_an_image_by_url_costs_as_much_as_one_inline() -> None:
    by_url = chat([{"type": "image_url", "image_url": {"url": "https://example.com/scan.png"}}])
    inline = chat([{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}])
    assert abs(prompt_tokens(by_url) - prompt_tokens(inline)) <= 20
    assert prompt_tokens(by_url) >= IMAGE_TOKENS_OPENAI


def test_gpt_4o_mini_images_cost_what_it_bills_for_them() -> None:
    # gpt-4o-mini bills an image as 2,833 + 5,667 tokens a tile, 33 times gpt-4o's 85 + 170.
    part = {"type": "image_url", "image_url": {"url": "https://example.com/scan.png"}}
    assert IMAGE_TOKENS_GPT_4O_MINI == 2_833 + 5_667 * 8
    assert prompt_tokens(chat([part], model="gpt-4o-mini-2024-07-18")) >= IMAGE_TOKENS_GPT_4O_MINI


def test_responses_and_anthropic_images() -> None:
    responses = {
        "model": "gpt-4.1-nano",
        "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "https://e.com/a.png"}]}],
    }
    anthropic = {
        "model": "claude-sonnet-4-5",
        "system": "You read scans.",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                    {"type": "image", "source": {"type": "url", "url": "https://e.com/b.png"}},
                ],
            }
        ],
    }
    assert IMAGE_TOKENS_OPENAI <= prompt_tokens(responses) <= IMAGE_TOKENS_OPENAI + 100
    assert 2 * IMAGE_TOKENS_ANTHROPIC <= prompt_tokens(anthropic) <= 2 * IMAGE_TOKENS_ANTHROPIC + 100


def wav(seconds: int, rate: int = 16_000) -> str:
    data = bytes(seconds * rate * 2)  # 16-bit mono
    fmt = struct.pack("<4sIHHIIHH", b"fmt ", 16, 1, 1, rate, rate * 2, 2, 16)
    riff = (
        b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE" + fmt + b"data" + struct.pack("<I", len(data))
    )
    return base64.b64encode(riff + data).decode()


def test_audio_costs_its_seconds_not_its_base64() -> None:
    # A WAV clip's length is read from its header: 10 s at 32 tokens a second.
    clip = chat([{"type": "input_audio", "input_audio": {"data": wav(10), "format": "wav"}}])
    assert 320 <= prompt_tokens(clip) <= 400
    # Any other format: as long as its size allows at 8 kbit/s (32 tokens a KB).
    mp3 = base64.b64encode(bytes(100_000)).decode()
    other = chat([{"type": "input_audio", "input_audio": {"data": mp3, "format": "mp3"}}])
    assert 3_200 <= prompt_tokens(other) <= 3_300


def test_tool_schemas_are_text() -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "tag",
            "parameters": {"type": "object", "properties": {"type": {"type": "string", "enum": ["image"]}}},
        },
    }
    request = {**chat("tag this"), "tools": [tool]}
    assert prompt_tokens(request) > prompt_tokens(chat("tag this")) + 40


def test_output_is_the_cap() -> None:
    assert estimate_usage(CTX, chat("hi"), 7).output_tokens == 7
    assert estimate_usage(CTX, chat("hi"), None).output_tokens == 50
    assert estimate_usage(CTX, {"messages": []}, None).output_tokens == 4096


@pytest.mark.parametrize(("given", "tokens"), [(5000, 5000), (12.5, 13), ("800", 800), (0, 0)])
def test_max_input_tokens_replaces_the_prompt_estimate(given: object, tokens: int) -> None:
    request = chat([{"type": "image_url", "image_url": {"url": "https://example.com/scan.png"}}])
    assert estimate_usage(CTX, request, 50, max_input_tokens=given) == Usage(tokens, 50)
    worst = estimate_usage(CTX, request, 50, max_input_tokens=given)
    assert estimate(CTX, "openai", "gpt-4o", worst) == Decimal(tokens + 50) / 1000


@pytest.mark.parametrize(
    ("given", "usd"), [(Decimal("0.25"), "0.25"), (0.05, "0.05"), ("1.5", "1.5"), (0, "0")]
)
def test_estimate_usd_replaces_the_cost(given: object, usd: str) -> None:
    worst = estimate_usage(CTX, chat("hi"), 50)
    amount = estimate(CTX, "openai", "gpt-4o", worst, estimate_usd=given)
    assert isinstance(amount, Decimal)
    assert amount == Decimal(usd)
    assert estimate(CTX, "openai", "gpt-4o", worst) == Decimal(worst.input_tokens + 50) / 1000


@pytest.mark.parametrize(
    "bad", [-1, -0.5, float("nan"), float("inf"), "lots", "", True, [5000], Decimal("-1")]
)
def test_bad_reservations_are_refused_in_one_sentence(bad: object) -> None:
    with pytest.raises(
        BudgetError, match=r"max_input_tokens=.* is not usable: give a finite number of prompt"
    ):
        estimate_usage(CTX, chat("hi"), 50, max_input_tokens=bad)
    worst = estimate_usage(CTX, chat("hi"), 50)
    with pytest.raises(BudgetError, match=r"estimate_usd=.* is not usable: give a finite number of USD >= 0"):
        estimate(CTX, "openai", "gpt-4o", worst, estimate_usd=bad)
