"""The ledger: every LLM call that spent money, priced and attributed to tenant, run, item and model.

The cost ledger is the set of recorded LLM calls. A call is priced when it is recorded; an unknown
model is recorded with cost unknown (NULL), never zero.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from pydantic_core import to_jsonable_python

from papayya.models import LLMCall, Reason
from papayya.pricing import Usage, price_call

if TYPE_CHECKING:
    from papayya.context import AttemptContext

# Stop reasons that mean the model did not finish its answer (OpenAI, Anthropic, Gemini spellings).
DEGENERATE_STOP_REASONS = frozenset(
    {
        "length",
        "max_tokens",
        "max_output_tokens",
        "content_filter",
        "refusal",
        "safety",
        "recitation",
        "model_context_window_exceeded",
    }
)


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
) -> LLMCall:
    """Price one LLM call (the tenant's override, else the public catalog, else unknown), write it to
    the ledger (with its journal step when ``journal``) in one round trip, add its cost to the
    attempt, degrade the item on a stop reason that means the answer is incomplete, and tell plugins."""
    price = price_call(provider, model, usage, ctx.price_overrides)
    call = LLMCall(
        tenant_id=ctx.tenant_id,
        run_id=ctx.run_id,
        item_id=ctx.item_id,
        attempt_id=ctx.attempt_id,
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
    journaled = journal and step_key is not None and request_hash is not None
    ctx.runtime.store.llm_call_record(
        {**call.as_params(), "reserved_usd": reserved},
        journal_result=ctx.runtime.blobs.shrink(ctx.tenant_id, journal_result) if journaled else None,
        journal=journaled,
        request_hash=request_hash,
    )
    ctx.runtime.budgets.settle(ctx.accounts, reserved=reserved or Decimal(0), actual=price.cost_usd)
    if journaled:
        assert step_key is not None
        assert request_hash is not None
        ctx.remember(step_key, request_hash, journal_result)
    if price.cost_usd is None:
        ctx.cost_unknown = True
    else:
        ctx.cost_usd += price.cost_usd
    if stop_reason is not None and stop_reason.lower() in DEGENERATE_STOP_REASONS:
        ctx.signal(
            Reason(
                code="llm_stop_reason",
                path=stop_reason.lower(),
                message=f"{provider}/{model} stopped with {stop_reason!r}; the answer is incomplete",
            )
        )
    ctx.runtime.hooks.llm_call_recorded(call)
    return call


def extract_usage(provider: str, response: Any) -> tuple[str | None, Usage, str | None]:
    """(model, usage, stop reason) from an OpenAI- or Anthropic-shaped response (object or dict)."""
    data = to_jsonable_python(response, fallback=lambda o: None)
    if not isinstance(data, dict):
        return None, Usage(), None
    usage = data.get("usage") or {}
    details = usage.get("prompt_tokens_details") or {}
    if "prompt_tokens" in usage:  # OpenAI chat completions
        u = Usage(
            input_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=int(usage.get("completion_tokens") or 0),
            cache_read_tokens=int(details.get("cached_tokens") or 0),
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


_PROMPT_FIELDS = ("messages", "input", "prompt", "system", "instructions", "tools", "tool_choice")
_MAX_OUTPUT_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


def estimate_usage(ctx: AttemptContext, request: dict[str, Any], max_tokens: int | None) -> Usage:
    """The worst-case usage of a request, before it is sent.

    Prompt tokens are over-estimated at one token per two characters of the request's JSON; output at
    ``max_tokens`` (the argument, else the request's own cap, else ``PAPAYYA_DEFAULT_MAX_OUTPUT_TOKENS``;
    ``max_tokens=0`` for a call that generates nothing, such as embeddings). A call that caps its
    output can therefore never use, or cost, more than was reserved for it.
    """
    prompt = {k: request[k] for k in _PROMPT_FIELDS if k in request}
    chars = len(json.dumps(to_jsonable_python(prompt, fallback=repr), ensure_ascii=False))
    cap = max_tokens
    if cap is None:
        cap = next((int(request[k]) for k in _MAX_OUTPUT_FIELDS if request.get(k)), None)
    output = ctx.runtime.settings.default_max_output_tokens if cap is None else cap
    return Usage(chars // 2 + 16, output)


def estimate(ctx: AttemptContext, provider: str, model: str, usage: Usage) -> Decimal | None:
    """The worst-case cost of that usage at the tenant's prices (None: no price known)."""
    return price_call(provider, model, usage, ctx.price_overrides).cost_usd
