"""papayya_anthropic: every Anthropic call an agent makes is journaled, priced and attributed.

::

    import anthropic
    import papayya_anthropic
    from papayya import agent

    client = papayya_anthropic.instrument(anthropic.Anthropic())

    @agent(retries=2)
    def summarize(item):
        reply = client.messages.create(model="claude-3-5-haiku-latest", max_tokens=512, messages=[...])
        return {"summary": reply.content[0].text}

Inside an attempt, ``client.messages.create`` goes through ``run.llm``: the call's usage (cache reads
and writes included), stop reason and cost go to the ledger (attributed to tenant, run, item and
model), the response goes to the journal, and a retried or resumed attempt gets the recorded
``Message`` back without calling Anthropic again. A ``max_tokens`` or ``refusal`` stop degrades the
item. Each call carries an ``Idempotency-Key`` header that is stable across retries of the same step.

Outside an attempt the client behaves exactly as before. ``instrument`` works on
``anthropic.Anthropic`` and ``anthropic.AsyncAnthropic`` (pass ``provider=`` for another host, e.g.
``"aws-bedrock"``), instruments the copies ``with_options()`` makes, and ``uninstrument`` undoes it.

Not recorded, and so not replayed or priced:

- ``stream=True`` is refused inside an attempt with ``StreamingNotSupported``: papayya cannot yet
  journal a stream. Outside an attempt streams work as before.
- ``client.messages.stream(...)``, ``client.beta.messages``, and ``with_raw_response`` /
  ``with_streaming_response`` calls run as before, unrecorded (a warning is logged once per process
  for the raw-response wrappers).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

try:
    import anthropic
    from anthropic.types import Message
except ImportError as exc:
    raise ImportError(
        "papayya_anthropic needs the anthropic package; install it with pip install 'papayya[anthropic]'."
    ) from exc

from papayya import PapayyaError, run

__all__ = ["StreamingNotSupported", "instrument", "uninstrument"]

log = logging.getLogger("papayya.anthropic")

Client = TypeVar("Client", bound=anthropic.Anthropic | anthropic.AsyncAnthropic)

_ORIGINAL = "__papayya_original__"
_STEP = "anthropic.messages"
_warned_raw = False


class StreamingNotSupported(PapayyaError):
    """A streaming call was made inside a papayya attempt, where it cannot be journaled and priced."""


def instrument(client: Client, *, provider: str = "anthropic") -> Client:
    """Record the client's calls made inside papayya attempts; returns the same client.

    Args:
        client: An ``anthropic.Anthropic`` or ``anthropic.AsyncAnthropic``. Instrumenting twice is
            harmless.
        provider: The provider name the ledger prices calls under (``genai-prices`` provider id).

    Raises:
        TypeError: ``client`` is not an Anthropic client.
    """
    if not isinstance(client, anthropic.Anthropic | anthropic.AsyncAnthropic):
        raise TypeError(
            f"papayya_anthropic.instrument() takes an anthropic.Anthropic or anthropic.AsyncAnthropic "
            f"client, not {type(client).__name__}; for OpenAI use papayya_openai.instrument()."
        )
    messages = client.messages
    if not hasattr(messages.create, _ORIGINAL):
        wrap = _wrap_async if isinstance(client, anthropic.AsyncAnthropic) else _wrap_sync
        vars(messages)["create"] = wrap(messages.create, provider=provider)
    for name in ("copy", "with_options"):
        method = getattr(client, name)
        if not hasattr(method, _ORIGINAL):
            vars(client)[name] = _wrap_copy(method, provider)
    return client


def uninstrument(client: Client) -> Client:
    """Undo ``instrument``: the client's calls are no longer recorded. Returns the same client."""
    if hasattr(vars(client.messages).get("create"), _ORIGINAL):
        del vars(client.messages)["create"]
    for name in ("copy", "with_options"):
        if hasattr(vars(client).get(name), _ORIGINAL):
            del vars(client)[name]
    return client


def _decode(data: Any) -> Message:
    return Message.construct(**data)


def _recordable(kwargs: dict[str, Any]) -> bool:
    """True when this call should go through ``run.llm``; raises for a stream inside an attempt."""
    global _warned_raw
    if not run.active:
        return False
    headers = kwargs.get("extra_headers") or {}
    if any(str(h).lower().startswith("x-stainless-") and "raw-response" in str(h).lower() for h in headers):
        if not _warned_raw:
            _warned_raw = True
            log.warning(
                "messages.create called through with_raw_response/with_streaming_response inside a "
                "papayya attempt: the call is not recorded in the ledger or journal; call it directly "
                "to record it."
            )
        return False
    if kwargs.get("stream"):
        raise StreamingNotSupported(
            "client.messages.create(stream=True) is not supported inside a papayya agent (a stream "
            "cannot be journaled or priced yet); call it without stream=True."
        )
    return True


def _with_key(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with papayya's idempotency key as a header, unless the caller set one."""
    headers = dict(kwargs.get("extra_headers") or {})
    if not any(str(h).lower() == "idempotency-key" for h in headers):
        headers["Idempotency-Key"] = run.idempotency_key(_STEP)
    return {**kwargs, "extra_headers": headers}


def _wrap_sync(original: Callable[..., Any], *, provider: str) -> Callable[..., Any]:
    @functools.wraps(original)
    def create(*args: Any, **kwargs: Any) -> Any:
        if not _recordable(kwargs):
            return original(*args, **kwargs)
        return run.llm(_STEP, provider=provider, decode=_decode)(original, *args, **_with_key(kwargs))

    setattr(create, _ORIGINAL, original)
    return create


def _wrap_async(original: Callable[..., Any], *, provider: str) -> Callable[..., Any]:
    @functools.wraps(original)
    async def create(*args: Any, **kwargs: Any) -> Any:
        if not _recordable(kwargs):
            return await original(*args, **kwargs)
        return await run.llm(_STEP, provider=provider, decode=_decode)(original, *args, **_with_key(kwargs))

    setattr(create, _ORIGINAL, original)
    return create


def _wrap_copy(original: Callable[..., Any], provider: str) -> Callable[..., Any]:
    @functools.wraps(original)
    def copy(*args: Any, **kwargs: Any) -> Any:
        return instrument(original(*args, **kwargs), provider=provider)

    setattr(copy, _ORIGINAL, original)
    return copy
