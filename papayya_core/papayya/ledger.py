"""The ledger: every LLM call that spent money, priced and attributed to tenant, run, item and model.

The cost ledger is the set of recorded LLM calls. A call is priced when it is recorded; an unknown
model is recorded with cost unknown (NULL), never zero.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any
from uuid import UUID

from pydantic_core import to_jsonable_python

from papayya.errors import BudgetError
from papayya.models import LLMCall, Reason
from papayya.pricing import Price, Usage, price_call

if TYPE_CHECKING:
    from papayya.context import AttemptContext

log = logging.getLogger("papayya.ledger")

# Stop reasons that mean the model did not finish its answer (OpenAI, Anthropic, Gemini, Bedrock
# Converse spellings).
DEGENERATE_STOP_REASONS = frozenset(
    {
        "length",
        "max_tokens",
        "max_output_tokens",
        "content_filter",
        "content_filtered",
        "guardrail_intervened",
        "refusal",
        "safety",
        "recitation",
        "model_context_window_exceeded",
    }
)


# A streamed answer, as the journal holds it: ``{STREAM_EVENTS: [event, ...]}``, each event the JSON the
# provider sent. ``extract_usage`` reads it as the response its events add up to.
STREAM_EVENTS = "stream_events"
# The stop reason of a ledger row for a stream that ended before its last event (the caller stopped
# reading or closed it, or the connection failed): settled on the usage the provider had reported so
# far, or, when it had reported none, on the worst-case usage its reservation assumed.
ABANDONED_REPORTED = "abandoned:reported_usage"
ABANDONED_RESERVED = "abandoned:reservation"


def record(
    ctx: AttemptContext,
    *,
    provider: str,
    model: str,
    usage: Usage,
    stop_reason: str | None,
    latency_ms: float | None,
    step_key: str | None,
    idempotency_key: str | None,
    journal_result: Any = None,
    journal: bool = False,
    request_hash: str | None = None,
    reserved: Decimal | None = None,
    fallback: Price | None = None,
) -> LLMCall:
    """Price one LLM call (the tenant's override, else the public catalog, else ``fallback``: the
    price the client library computed, else unknown), write it to the ledger (with its journal step
    when ``journal``) in one round trip, add its cost to the attempt, degrade the item on a stop
    reason that means the answer is incomplete, and tell plugins."""
    price = price_call(provider, model, usage, ctx.price_overrides)
    if price.cost_usd is None and fallback is not None and fallback.cost_usd is not None and usage.reported:
        price = fallback
    if not usage.reported:
        log.warning(
            "item %s: %s/%s answered without token usage papayya could read; the call is recorded with "
            "cost unknown",
            ctx.item.id,
            provider,
            model,
        )
    call = call_row(
        (ctx.tenant_id, ctx.run_id, ctx.item_id, ctx.attempt_id),
        step_key=step_key,
        provider=provider,
        model=model,
        usage=usage,
        stop_reason=stop_reason,
        latency_ms=latency_ms,
        price=price,
        idempotency_key=idempotency_key,
    )
    journaled = journal and step_key is not None and request_hash is not None
    lease_lost = ctx.runtime.store.llm_call_record(
        {**call.as_params(), "reserved_usd": reserved, "lease_token": ctx.lease_token},
        journal_result=ctx.runtime.blobs.shrink(ctx.tenant_id, journal_result) if journaled else None,
        journal=journaled,
        request_hash=request_hash,
    )
    ctx.runtime.budgets.settle(ctx.accounts, reserved=reserved or Decimal(0), actual=price.cost_usd)
    if lease_lost:  # billed, so recorded (and added to the item's cost), but by a worker it was not
        log.warning(
            "item %s: attempt %d recorded a call it paid for after its lease moved on (flagged lease_lost)",
            ctx.item.id,
            ctx.attempt,
        )
    if journaled:
        assert step_key is not None
        assert request_hash is not None
        ctx.remember(step_key, request_hash, journal_result)
    if price.cost_usd is None:
        ctx.cost_unknown = True
    else:
        ctx.cost_usd += price.cost_usd
    signal_stop(ctx, provider, model, stop_reason)
    ctx.runtime.hooks.llm_call_recorded(call)
    return call


def call_row(
    owner: tuple[str, UUID, UUID, UUID],
    *,
    step_key: str | None,
    provider: str,
    model: str,
    usage: Usage,
    stop_reason: str | None,
    latency_ms: float | None,
    price: Price,
    idempotency_key: str | None,
) -> LLMCall:
    """The ledger row of a priced call of the attempt ``owner`` (tenant, run, item, attempt)."""
    tenant_id, run_id, item_id, attempt_id = owner
    return LLMCall(
        tenant_id=tenant_id,
        run_id=run_id,
        item_id=item_id,
        attempt_id=attempt_id,
        step_key=step_key,
        provider=provider,
        model=model,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        stop_reason=stop_reason,
        latency_ms=latency_ms,
        cost_usd=price.cost_usd,
        price_source=price.source,
        idempotency_key=idempotency_key,
    )


def signal_stop(ctx: AttemptContext, provider: str, model: str | None, stop_reason: str | None) -> None:
    """Degrade the item when a response's stop reason means its answer is incomplete. Called for a
    call just paid for and for one answered from the journal alike, so a retry, a resume or a
    from-journal replay reaches the same outcome as the attempt that paid."""
    if stop_reason is not None and stop_reason.lower() in DEGENERATE_STOP_REASONS:
        ctx.signal(
            Reason(
                code="llm_stop_reason",
                path=stop_reason.lower(),
                message=f"{provider}/{model or 'unknown'} stopped with {stop_reason!r}; "
                "the answer is incomplete",
            )
        )


def extract_usage(provider: str, response: Any) -> tuple[str | None, Usage, str | None]:
    """(model, usage, stop reason) from an OpenAI-, Anthropic- or Bedrock-Converse-shaped response
    (object or dict)."""
    data = to_jsonable_python(response, fallback=lambda o: None, bytes_mode="base64")
    if isinstance(data, dict) and isinstance(data.get(STREAM_EVENTS), list):
        data = fold_stream(data[STREAM_EVENTS])
    if not isinstance(data, dict):
        return None, Usage(), None
    if provider == "bedrock":  # a Converse answer, or a folded ConverseStream (its stop_reason)
        stop = data.get("stopReason", data.get("stop_reason"))
        return None, _converse_usage(data.get("usage")), _str_or_none(stop)
    usage = data.get("usage") or {}
    details = usage.get("prompt_tokens_details") or {}
    if "prompt_tokens" in usage:  # OpenAI chat completions, and LiteLLM's responses for any provider
        u = Usage(
            input_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=int(usage.get("completion_tokens") or 0),
            cache_read_tokens=int(details.get("cached_tokens") or 0),
            # LiteLLM reports Anthropic's cache writes here (within prompt_tokens); OpenAI sends none.
            cache_write_tokens=int(details.get("cache_creation_tokens") or 0),
        )
    else:  # Anthropic messages, OpenAI responses
        cache_read = int(usage.get("cache_read_input_tokens") or 0)
        cache_write = int(usage.get("cache_creation_input_tokens") or 0)
        input_details = usage.get("input_tokens_details") or {}
        u = Usage(
            input_tokens=int(usage.get("input_tokens") or 0)
            + (cache_read + cache_write if provider == "anthropic" else 0),
            output_tokens=int(usage.get("output_tokens") or 0),
            cache_read_tokens=cache_read or int(input_details.get("cached_tokens") or 0),
            cache_write_tokens=cache_write,
        )
    stop = data.get("stop_reason")
    choices = data.get("choices")
    if stop is None and choices:
        stop = choices[0].get("finish_reason")
    if stop is None and data.get("object") == "response":  # OpenAI Responses API: why it is incomplete
        stop = (data.get("incomplete_details") or {}).get("reason") or data.get("status")
    return data.get("model"), u, stop


def _converse_usage(usage: Any) -> Usage:
    """A Bedrock Converse ``usage``: ``inputTokens`` leaves out the prompt tokens read from or written
    to the cache (``cacheReadInputTokens``, ``cacheWriteInputTokens``), which papayya counts in.
    Without readable ``inputTokens`` and ``outputTokens`` the usage is not reported (priced unknown)."""
    if not isinstance(usage, dict):
        return Usage(reported=False)
    counts = [usage.get(k, 0) for k in ("inputTokens", "outputTokens")]
    counts += [usage.get(k) or 0 for k in ("cacheReadInputTokens", "cacheWriteInputTokens")]
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts) or not (
        "inputTokens" in usage and "outputTokens" in usage
    ):
        return Usage(reported=False)
    fresh, output, cache_read, cache_write = counts
    return Usage(fresh + cache_read + cache_write, output, cache_read, cache_write)


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def fold_stream(events: list[Any]) -> dict[str, Any]:
    """What a stream's events add up to, as ``extract_usage`` reads a response: its model, its usage
    (from the last event that reports it) and its stop reason (None until the provider sent one).

    OpenAI chat chunks (usage in the last chunk, under ``stream_options.include_usage``), OpenAI
    Responses events (the whole response in ``response.completed``/``incomplete``/``failed``) and
    Anthropic message events (usage in ``message_start``, updated by ``message_delta``), and Bedrock
    ConverseStream events as boto3 yields them (``{"messageStop": {"stopReason": ...}}``, then
    ``{"metadata": {"usage": ...}}``; the usage in Converse's spelling).
    """
    folded: dict[str, Any] = {"model": None, "usage": None, "stop_reason": None}
    for event in events:
        if not isinstance(event, dict):
            continue
        kind = event.get("type")
        if event.get("object") == "chat.completion.chunk":
            folded["model"] = folded["model"] or event.get("model")
            for choice in event.get("choices") or []:
                if isinstance(choice, dict) and choice.get("finish_reason"):
                    folded["stop_reason"] = choice["finish_reason"]
            if event.get("usage"):
                folded["usage"] = event["usage"]
        elif isinstance(event.get("messageStop"), dict):
            folded["stop_reason"] = event["messageStop"].get("stopReason") or folded["stop_reason"]
        elif isinstance(event.get("metadata"), dict) and "usage" in event["metadata"]:
            folded["usage"] = event["metadata"]["usage"]
        elif kind == "message_start" and isinstance(event.get("message"), dict):
            folded["model"] = event["message"].get("model")
            folded["usage"] = dict(event["message"].get("usage") or {})
        elif kind == "message_delta":
            delta_usage = {k: v for k, v in (event.get("usage") or {}).items() if v is not None}
            folded["usage"] = {**(folded["usage"] or {}), **delta_usage}
            folded["stop_reason"] = (event.get("delta") or {}).get("stop_reason") or folded["stop_reason"]
        elif (
            isinstance(kind, str) and kind.startswith("response.") and isinstance(event.get("response"), dict)
        ):
            response = event["response"]
            folded["model"] = response.get("model") or folded["model"]
            folded["usage"] = response.get("usage") or folded["usage"]
            if response.get("status") in ("completed", "incomplete", "failed"):
                folded["stop_reason"] = (response.get("incomplete_details") or {}).get("reason") or response[
                    "status"
                ]
    return folded


def stream_complete(provider: str, recorded: Any) -> bool:
    """True when a recorded stream reached its end: its events carry a stop reason and usage."""
    _, usage, stop = extract_usage(provider, recorded)
    return stop is not None and usage.input_tokens + usage.output_tokens > 0


def abandoned_usage(provider: str, recorded: Any, reserved: Usage) -> tuple[Usage, str]:
    """The usage a stream that did not reach its end is settled on, and the stop reason that says so:
    what the provider reported before it stopped (``ABANDONED_REPORTED``), else the worst case the
    reservation assumed (``ABANDONED_RESERVED``)."""
    _, usage, _ = extract_usage(provider, recorded)
    if usage.input_tokens + usage.output_tokens > 0:
        return usage, ABANDONED_REPORTED
    return reserved, ABANDONED_RESERVED


_PROMPT_FIELDS = (
    "messages",
    "input",
    "prompt",
    "system",
    "instructions",
    "tools",
    "tool_choice",
    "toolConfig",  # Bedrock Converse
)
_MAX_OUTPUT_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
_ASCII = bytes(range(128))

# The most input tokens one image can cost, from the providers' documented rules at the highest detail
# ("auto" may pick it), whatever the image's size (they resize large images before counting).
# Anthropic: ⌈w/28⌉ * ⌈h/28⌉ patches up to 2,576 px on the long edge, at most 4,784 (Opus 4.7 and
# later; earlier models resize to ~1.15 megapixels, about 1,600 tokens).
IMAGE_TOKENS_ANTHROPIC = 4_800
# OpenAI tiles (gpt-4o, gpt-4.1, gpt-5, o-series): base + per-tile * 512-px tiles of the image scaled
# into 2,048 px and to 768 px on its short side, at most 8 tiles (2,048 * 768): 85 + 170 * 8 = 1,445
# for gpt-4o; patches (gpt-4.1-mini/nano, o4-mini, gpt-5-mini/nano): at most 1,536 32-px patches *
# a multiplier of up to 2.46 = 3,779.
IMAGE_TOKENS_OPENAI = 3_800
# gpt-4o-mini bills an image as 2,833 + 5,667 per tile (its price per token is lower): 8 tiles.
IMAGE_TOKENS_GPT_4O_MINI = 2_833 + 5_667 * 8
# Audio: Gemini documents 32 tokens per second, OpenAI's audio models about 10; a clip's length is read
# from a WAV header, else assumed from 8 kbit/s (MP3's lowest bitrate), the longest its size allows.
AUDIO_TOKENS_PER_SECOND = 32
AUDIO_MIN_BYTES_PER_SECOND = 1_000


def text_tokens(text: str) -> int:
    """The most tokens a text can be, over-estimated: ASCII at one per two characters, and every other
    character at one per byte of its UTF-8 encoding.

    Byte-level tokenizers (OpenAI's, Anthropic's, and SentencePiece with byte fallback) never use more
    than one token per byte, so dense scripts are bounded: CJK (~1-2 tokens a character in practice) at
    3, an emoji at 4 per code point. English uses about one token per four characters; ASCII that
    tokenizes denser than one per two (long random ids, hashes) is the one case this can under-count.
    """
    data = text.encode("utf-8", "surrogatepass")
    dense = len(data.translate(None, _ASCII))
    return (len(data) - dense + 1) // 2 + dense


def prompt_tokens(request: dict[str, Any], model: str | None = None) -> int:
    """The most prompt tokens a request can be billed, as far as papayya can tell (see ``estimate_usage``)."""
    prompt = {k: request[k] for k in _PROMPT_FIELDS if k in request}
    model = str(model or request.get("model") or "")
    text, media = _without_media(to_jsonable_python(prompt, fallback=repr), model.lower())
    return text_tokens(json.dumps(text, ensure_ascii=False)) + media + 16


def _without_media(value: Any, model: str) -> tuple[Any, int]:
    """``value`` with each image and audio part replaced by its type, and the tokens those parts cost.

    Their base64 payload is not text the model reads: counted as characters it would reserve tens of
    thousands of tokens for an image that costs at most a few thousand.
    """
    if isinstance(value, list):
        parts = [_without_media(v, model) for v in value]
        return [p for p, _ in parts], sum(t for _, t in parts)
    if not isinstance(value, dict):
        return value, 0
    kind = value.get("type")
    if kind in ("image_url", "input_image"):  # OpenAI chat completions, responses
        return kind, IMAGE_TOKENS_GPT_4O_MINI if "gpt-4o-mini" in model else IMAGE_TOKENS_OPENAI
    if kind == "image" and isinstance(value.get("source"), dict):  # Anthropic
        return kind, IMAGE_TOKENS_ANTHROPIC
    if kind == "input_audio" and isinstance(value.get("input_audio"), dict):  # OpenAI chat completions
        return kind, _audio_tokens(value["input_audio"])
    if set(value) == {"image"} and isinstance(value["image"], dict) and "source" in value["image"]:
        return "image", IMAGE_TOKENS_ANTHROPIC  # Bedrock Converse, counted as Claude on Bedrock bills it
    tokens = 0
    out: dict[str, Any] = {}
    for k, v in value.items():
        out[k], t = _without_media(v, model)
        tokens += t
    return out, tokens


def _audio_tokens(part: dict[str, Any]) -> int:
    """``AUDIO_TOKENS_PER_SECOND`` over the clip's longest length: from a WAV header's byte rate, else
    at ``AUDIO_MIN_BYTES_PER_SECOND``."""
    data = str(part.get("data") or "")
    size = len(data) * 3 // 4
    rate = AUDIO_MIN_BYTES_PER_SECOND
    if str(part.get("format")).lower() == "wav":
        try:
            head = base64.b64decode(data[:48])
        except (binascii.Error, ValueError):
            head = b""
        if head[:4] == b"RIFF" and head[8:16] == b"WAVEfmt " and int.from_bytes(head[28:32], "little"):
            rate = int.from_bytes(head[28:32], "little")
    return -(-size * AUDIO_TOKENS_PER_SECOND // rate)


def estimate_usage(
    ctx: AttemptContext,
    request: dict[str, Any],
    max_tokens: int | None,
    *,
    model: str | None = None,
    max_input_tokens: object = None,
) -> Usage:
    """The worst-case usage of a request, before it is sent, as far as papayya can count it.

    Output: ``max_tokens`` (the argument, else the request's own cap, else
    ``PAPAYYA_DEFAULT_MAX_OUTPUT_TOKENS``; ``max_tokens=0`` for a call that generates nothing, such as
    embeddings), which the provider cannot exceed.

    Prompt: ``max_input_tokens`` when given; else the request's JSON (messages, input, system, tools...)
    by ``text_tokens`` (ASCII at 1 token per 2 characters, other characters at 1 per UTF-8 byte), plus 16,
    plus for each part the text does not show:

    - an image (OpenAI ``image_url``/``input_image``, Anthropic ``image``, Bedrock Converse ``image``),
      whatever its size or detail: 4,800 tokens on Anthropic and Bedrock, 3,800 on OpenAI models,
      48,169 on gpt-4o-mini (see the constants);
    - audio (OpenAI ``input_audio``): 32 tokens per second, the length read from a WAV header, else from
      the base64 size at 8 kbit/s (32 tokens per KB).

    Base64 payloads of those parts are not counted as text. Anything else (a PDF ``file``/``document``
    part, images of other vendors behind an OpenAI-compatible API, input the provider adds itself) is
    counted as its JSON text, which is not a bound: give ``max_input_tokens`` for it.

    Raises:
        BudgetError: ``max_input_tokens`` is not a finite number >= 0.
    """
    if max_input_tokens is not None:
        given = _non_negative(max_input_tokens, "max_input_tokens", "prompt tokens", "5000")
        prompt = int(given.to_integral_value(rounding=ROUND_CEILING))
    else:
        prompt = prompt_tokens(request, model)
    cap = max_tokens
    if cap is None:
        cap = next((int(request[k]) for k in _MAX_OUTPUT_FIELDS if request.get(k)), None)
    output = ctx.runtime.settings.default_max_output_tokens if cap is None else cap
    return Usage(prompt, output)


def estimate(
    ctx: AttemptContext, provider: str, model: str, usage: Usage, *, estimate_usd: object = None
) -> Decimal | None:
    """The worst-case cost of that usage at the tenant's prices (None: no price known), or
    ``estimate_usd`` when the caller gave one.

    Raises:
        BudgetError: ``estimate_usd`` is not a finite number >= 0.
    """
    if estimate_usd is not None:
        return _non_negative(estimate_usd, "estimate_usd", "USD", "0.05")
    return price_call(provider, model, usage, ctx.price_overrides).cost_usd


def _non_negative(value: object, name: str, unit: str, example: str) -> Decimal:
    amount: Decimal | None = None
    if isinstance(value, int | float | str | Decimal) and not isinstance(value, bool):
        try:
            amount = Decimal(str(value).strip())
        except InvalidOperation:
            amount = None
    if amount is None or not amount.is_finite() or amount < 0:
        raise BudgetError(
            f"run.llm({name}={value!r}) is not usable: give a finite number of {unit} >= 0, "
            f"e.g. {name}={example}."
        )
    return amount
