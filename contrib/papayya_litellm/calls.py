"""``litellm.completion``/``acompletion``/``embedding``/``aembedding`` through ``run.llm``.

Each wrapper sends exactly what its caller passed (plus papayya's ``Idempotency-Key`` header, and for
a stream the request for its usage); what ``run.llm`` sees of the call is its *question*: the
arguments without transport details (keys, base URL, headers, timeouts), with the model as the
provider names it and LiteLLM's provider. The question is what the journal's request hash covers
(a retry that moved to another key or base URL is the same question; one sent to another provider
is not), what the budget reservation is estimated from and what the rate limits are keyed by.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import litellm

from papayya import ledger
from papayya.context import current, run
from papayya.errors import JournalMiss
from papayya.instrument import _with_key, _with_usage
from papayya.ledger import STREAM_EVENTS
from papayya.pricing import Price, Usage, price_call
from papayya_litellm import streams
from papayya_litellm.providers import Route, route

log = logging.getLogger("papayya.litellm")

ORIGINAL = "__papayya_original__"  # set on every wrapper, naming the function it replaced

# Arguments that say how to reach the provider, not what to ask it.
_TRANSPORT = frozenset(
    {
        "api_key",
        "api_base",
        "base_url",
        "api_version",
        "organization",
        "timeout",
        "headers",
        "extra_headers",
        "metadata",
        "client",
        "num_retries",
        "max_retries",
        "litellm_call_id",
        "litellm_logging_obj",
        "logger_fn",
        "deployment_id",
    }
)
_CREDENTIAL_SUFFIXES = ("_key", "_secret", "_token", "_credentials", "_password")

# Inside a recorded call: LiteLLM's own nested calls (acompletion runs completion) pass through.
_inside: contextvars.ContextVar[bool] = contextvars.ContextVar("papayya_litellm_inside", default=False)


@dataclass(frozen=True)
class Target:
    """One LiteLLM function to record.

    Attributes:
        name: Its name on the ``litellm`` module (``"acompletion"``).
        step: The step name in the journal and the ledger; a function and its async twin share one, so
            code moved from one to the other replays the same journal.
        decode: Rebuilds LiteLLM's response type from a recorded response (``ModelResponse``).
        max_output_tokens: The output tokens a budget reservation assumes: ``0`` for embeddings; None for
            the request's own cap, else ``PAPAYYA_DEFAULT_MAX_OUTPUT_TOKENS``.
        streams: ``stream=True`` is recorded (chat completions).
    """

    name: str
    step: str
    decode: Callable[[Any], Any]
    max_output_tokens: int | None = None
    streams: bool = False

    @property
    def call(self) -> str:
        return f"litellm.{self.name}"


def _decode_completion(recorded: Any) -> Any:
    if isinstance(recorded, dict) and STREAM_EVENTS in recorded:
        raise JournalMiss(
            "The journal holds a streamed answer to litellm.completion, and this call does not stream; "
            "replay without --from-journal to call the provider."
        )
    return litellm.ModelResponse(**recorded)


def _decode_embedding(recorded: Any) -> Any:
    return litellm.EmbeddingResponse(**recorded)


TARGETS = (
    Target("completion", "litellm.completion", _decode_completion, streams=True),
    Target("acompletion", "litellm.completion", _decode_completion, streams=True),
    Target("embedding", "litellm.embedding", _decode_embedding, max_output_tokens=0),
    Target("aembedding", "litellm.embedding", _decode_embedding, max_output_tokens=0),
)


@functools.cache
def _positional(fn: Callable[..., Any]) -> tuple[str, ...]:
    """The names of ``fn``'s parameters that a caller may pass by position."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return ()
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return tuple(p.name for p in params if p.kind in kinds)


def _question(original: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The call's arguments by name (positional ones too)."""
    request = dict(zip(_positional(original), args, strict=False))
    request.update(kwargs)
    return request


def _transport(name: str) -> bool:
    return name in _TRANSPORT or name.endswith(_CREDENTIAL_SUFFIXES)


def _litellm_estimate(model: str, usage: Usage) -> Decimal | None:
    """LiteLLM's price for ``usage`` of ``model`` (its own cost map), or None when it has none."""
    try:
        prompt, completion = litellm.cost_per_token(
            model=model, prompt_tokens=usage.input_tokens, completion_tokens=usage.output_tokens
        )
        total = Decimal(str(prompt)) + Decimal(str(completion))
    except Exception:  # LiteLLM raises for a model its map does not hold
        return None
    return total if total.is_finite() and total > 0 else None


def _reservation(where: Route, full_model: str, question: dict[str, Any], target: Target) -> Decimal | None:
    """The worst-case cost to reserve, from LiteLLM's cost map, for a model the catalog cannot price.

    None (``run.llm`` estimates it at the catalog's or the tenant's prices) for every model those know.
    """
    ctx = current.get()
    if ctx is None or price_call(where.provider, where.model, Usage(1, 1), ctx.price_overrides).cost_usd:
        return None
    worst = ledger.estimate_usage(ctx, question, target.max_output_tokens, model=where.model)
    return _litellm_estimate(full_model, worst)


def _priced(response: Any) -> Price | None:
    """LiteLLM's own cost for a response (its cost map, ``_hidden_params["response_cost"]``): the
    ledger records it, as ``litellm``, for a model papayya's catalog and the tenant do not price."""
    if not isinstance(response, litellm.ModelResponse | litellm.EmbeddingResponse):
        return None  # a stream carries no cost of its own (and reading it here would consume it)
    hidden = getattr(response, "_hidden_params", None)
    cost = hidden.get("response_cost") if isinstance(hidden, dict) else None
    try:
        amount = Decimal(str(cost))
    except (InvalidOperation, ValueError):
        return None
    if not amount.is_finite() or amount < 0:
        return None
    return Price(amount, "litellm")


def _prepare(
    target: Target,
    original: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    is_async: bool,
) -> tuple[Callable[..., Any], Callable[..., Any], dict[str, Any], Route]:
    """(``run.llm`` for this call, the function that sends it, the question, the route)."""
    request = _question(original, args, kwargs)
    where = route(request)
    question = {k: v for k, v in request.items() if not _transport(k)}
    question["model"] = where.model
    question["custom_llm_provider"] = where.litellm_provider
    full_model = f"{where.litellm_provider}/{where.model}"
    streamed = bool(request.get("stream")) and target.streams
    sent = _with_key(kwargs, target.step)
    hide = False
    if streamed:
        sent, hide = _with_usage(sent)
    llm = run.llm(
        target.step,
        provider=where.provider,
        decode=functools.partial(streams.replay, target.call, hide=hide) if streamed else target.decode,
        max_tokens=target.max_output_tokens,
        estimate_usd=_reservation(where, full_model, question, target),
        stream=functools.partial(streams.tap, hide=hide) if streamed else None,
        priced_by=_priced,
    )

    if is_async:

        async def send_async(**_question: Any) -> Any:
            token = _inside.set(True)
            try:
                return await original(*args, **sent)
            finally:
                _inside.reset(token)

        send: Callable[..., Any] = send_async
    else:

        def send_sync(**_question: Any) -> Any:
            token = _inside.set(True)
            try:
                return original(*args, **sent)
            finally:
                _inside.reset(token)

        send = send_sync
    # The journal's request hash names the function: one name for a function and its async twin.
    send.__qualname__ = target.step
    return llm, send, question, where


def wrap(target: Target, original: Callable[..., Any]) -> Callable[..., Any]:
    """``original`` (a LiteLLM function), recorded through ``run.llm`` when called inside an attempt."""
    if inspect.iscoroutinefunction(original):

        @functools.wraps(original)
        async def recorded_async(*args: Any, **kwargs: Any) -> Any:
            if not run.active or _inside.get():
                return await original(*args, **kwargs)
            llm, send, question, _ = _prepare(target, original, args, kwargs, is_async=True)
            return await llm(send, **question)

        wrapper: Callable[..., Any] = recorded_async
    else:

        @functools.wraps(original)
        def recorded(*args: Any, **kwargs: Any) -> Any:
            if not run.active or _inside.get():
                return original(*args, **kwargs)
            llm, send, question, _ = _prepare(target, original, args, kwargs, is_async=False)
            return llm(send, **question)

        wrapper = recorded
    setattr(wrapper, ORIGINAL, original)
    return wrapper
