"""Recording an LLM SDK client's calls through ``run.llm``, for any provider's contrib package.

A contrib package (``papayya_openai``, ``papayya_anthropic``) names the methods to record, one
``Target`` each, and hands its client to ``instrument_client``; everything else lives here, once::

    TARGETS = (Target("messages", step="anthropic.messages", decode=lambda d: Message.construct(**d)),)

    def instrument(client):
        return instrument_client(client, TARGETS, provider="anthropic", is_async=..., log=log)

Each target's ``create`` is replaced, on that client object only, by a wrapper that, inside an
attempt, calls ``run.llm(step, provider=..., decode=...)`` with an ``Idempotency-Key`` header stable
across retries of the step (unless the caller set one). Outside an attempt the original runs as is.
Inside one, ``stream=True`` raises ``StreamingNotSupported`` before any request, and calls through
the SDK's ``with_raw_response`` / ``with_streaming_response`` wrappers run unrecorded with a warning
logged once per logger. The client's ``copy()`` and ``with_options()`` instrument the copies they
make. This module imports no SDK: it relies only on the shape the Stainless-generated OpenAI and
Anthropic SDKs share (resources as attributes, ``extra_headers``, ``copy``/``with_options``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from papayya.context import run
from papayya.errors import StreamingNotSupported

__all__ = ["StreamingNotSupported", "Target", "instrument_client", "uninstrument_client"]

C = TypeVar("C")

_ORIGINAL = "__papayya_original__"  # set on every wrapper, naming the method it replaced
_COPIERS = ("copy", "with_options")
_warned_raw: set[str] = set()  # names of the loggers that have warned about raw-response calls


@dataclass(frozen=True)
class Target:
    """One SDK method to record: ``client.<path>.create``.

    Attributes:
        path: The resource on the client, dotted, e.g. ``"chat.completions"``. A client without it
            (an older SDK) is left alone there.
        step: The step name in the journal and the ledger, e.g. ``"openai.chat"``.
        decode: Rebuilds the SDK's response type from a recorded response, on replay.
        max_output_tokens: The output tokens the budget reservation assumes for every call of this
            method: ``0`` for one that generates none (embeddings). None: the request's own cap, else
            ``PAPAYYA_DEFAULT_MAX_OUTPUT_TOKENS``.
    """

    path: str
    step: str
    decode: Callable[[Any], Any]
    max_output_tokens: int | None = None

    @property
    def call(self) -> str:
        """The method as a user writes it, for messages: ``client.chat.completions.create``."""
        return f"client.{self.path}.create"


def instrument_client(
    client: C, targets: Sequence[Target], *, provider: str, is_async: bool, log: logging.Logger
) -> C:
    """Record ``targets`` of ``client`` when called inside an attempt; returns the same client.

    Instrumenting twice is harmless. The caller checks that ``client`` is its SDK's client.

    Args:
        client: An SDK client; its resources are changed in place.
        targets: The methods to record.
        provider: The provider name the ledger prices calls under (``genai-prices`` provider id).
        is_async: The client's methods are coroutine functions.
        log: Where the one-time warning about unrecorded raw-response calls goes.
    """
    wrap = _wrap_async if is_async else _wrap_sync
    for target in targets:
        resource = _resolve(client, target.path)
        if resource is None or hasattr(resource.create, _ORIGINAL):
            continue
        vars(resource)["create"] = wrap(resource.create, target, provider=provider, log=log)

    def again(copy: Any) -> Any:
        return instrument_client(copy, targets, provider=provider, is_async=is_async, log=log)

    for name in _COPIERS:
        method = getattr(client, name)
        if not hasattr(method, _ORIGINAL):
            vars(client)[name] = _wrap_copy(method, again)
    return client


def uninstrument_client(client: C, targets: Sequence[Target]) -> C:
    """Undo ``instrument_client``: ``targets`` of ``client`` are no longer recorded. Returns the client."""
    for target in targets:
        resource = _resolve(client, target.path)
        if resource is not None and hasattr(vars(resource).get("create"), _ORIGINAL):
            del vars(resource)["create"]
    for name in _COPIERS:
        if hasattr(vars(client).get(name), _ORIGINAL):
            del vars(client)[name]
    return client


def _resolve(client: Any, path: str) -> Any:
    obj = client
    for part in path.split("."):
        obj = getattr(obj, part, None)
    return obj


def _recordable(kwargs: dict[str, Any], target: Target, log: logging.Logger) -> bool:
    """True when this call should go through ``run.llm``; raises for a stream inside an attempt."""
    if not run.active:
        return False
    headers = kwargs.get("extra_headers") or {}
    # The SDKs mark raw-response calls with an X-Stainless-Raw-Response header; their return type is
    # not the parsed response the journal records and replays.
    if any(str(h).lower().startswith("x-stainless-") and "raw-response" in str(h).lower() for h in headers):
        if log.name not in _warned_raw:
            _warned_raw.add(log.name)
            log.warning(
                "%s called through with_raw_response/with_streaming_response inside a papayya attempt: "
                "the call is not recorded in the ledger or journal; call it directly to record it.",
                target.call,
            )
        return False
    if kwargs.get("stream"):
        raise StreamingNotSupported(
            f"{target.call}(stream=True) is not supported inside a papayya agent (a stream cannot be "
            "journaled or priced yet); call it without stream=True."
        )
    return True


def _with_key(kwargs: dict[str, Any], step: str) -> dict[str, Any]:
    """``kwargs`` with papayya's idempotency key as a header, unless the caller set one."""
    headers = dict(kwargs.get("extra_headers") or {})
    if not any(str(h).lower() == "idempotency-key" for h in headers):
        headers["Idempotency-Key"] = run.idempotency_key(step)
    return {**kwargs, "extra_headers": headers}


def _wrap_sync(
    original: Callable[..., Any], target: Target, *, provider: str, log: logging.Logger
) -> Callable[..., Any]:
    @functools.wraps(original)
    def create(*args: Any, **kwargs: Any) -> Any:
        if not _recordable(kwargs, target, log):
            return original(*args, **kwargs)
        llm = run.llm(
            target.step, provider=provider, decode=target.decode, max_tokens=target.max_output_tokens
        )
        return llm(original, *args, **_with_key(kwargs, target.step))

    setattr(create, _ORIGINAL, original)
    return create


def _wrap_async(
    original: Callable[..., Any], target: Target, *, provider: str, log: logging.Logger
) -> Callable[..., Any]:
    @functools.wraps(original)
    async def create(*args: Any, **kwargs: Any) -> Any:
        if not _recordable(kwargs, target, log):
            return await original(*args, **kwargs)
        llm = run.llm(
            target.step, provider=provider, decode=target.decode, max_tokens=target.max_output_tokens
        )
        return await llm(original, *args, **_with_key(kwargs, target.step))

    setattr(create, _ORIGINAL, original)
    return create


def _wrap_copy(original: Callable[..., Any], again: Callable[[Any], Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def copy(*args: Any, **kwargs: Any) -> Any:
        return again(original(*args, **kwargs))

    setattr(copy, _ORIGINAL, original)
    return copy
