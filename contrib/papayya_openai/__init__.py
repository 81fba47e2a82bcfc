"""papayya_openai: every OpenAI call an agent makes is journaled, priced and attributed.

::

    import openai
    import papayya_openai
    from papayya import agent

    client = papayya_openai.instrument(openai.OpenAI())

    @agent(retries=2)
    def summarize(item):
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=[...])
        return {"summary": reply.choices[0].message.content}

Inside an attempt, ``client.chat.completions.create`` and ``client.responses.create`` go through
``run.llm``: the call's usage, stop reason and cost go to the ledger (attributed to tenant, run,
item and model), the response goes to the journal, and a retried or resumed attempt gets the
recorded response back, as the same SDK type (``ChatCompletion``, ``Response``), without calling
OpenAI again. A ``length`` or ``content_filter`` stop degrades the item. Each call carries an
``Idempotency-Key`` header that is stable across retries of the same step (the SDK's own
``idempotency_key`` option sends nothing for OpenAI, so papayya sets the header itself).

Outside an attempt the client behaves exactly as before. ``instrument`` works on ``openai.OpenAI``
and ``openai.AsyncOpenAI`` (and their subclasses such as ``AzureOpenAI``; pass ``provider=`` to price
them right), instruments the copies ``with_options()`` makes, and ``uninstrument`` undoes it.

Not recorded, and so not replayed or priced:

- ``stream=True`` is refused inside an attempt with ``StreamingNotSupported``: papayya cannot yet
  journal a stream or be sure to see its usage. Outside an attempt streams work as before.
- ``with_raw_response`` / ``with_streaming_response`` calls and the ``parse`` / ``stream`` helpers
  run as before, unrecorded (a warning is logged once per process for the raw-response wrappers).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

try:
    import openai
    from openai.types.chat import ChatCompletion
    from openai.types.responses import Response
except ImportError as exc:
    raise ImportError(
        "papayya_openai needs the openai package; install it with pip install 'papayya[openai]'."
    ) from exc

from papayya import PapayyaError, run

__all__ = ["StreamingNotSupported", "instrument", "uninstrument"]

log = logging.getLogger("papayya.openai")

Client = TypeVar("Client", bound=openai.OpenAI | openai.AsyncOpenAI)

_ORIGINAL = "__papayya_original__"
# (resource path on the client, step name in the journal, response type to decode a recorded step)
_TARGETS: tuple[tuple[str, str, Callable[[Any], Any]], ...] = (
    ("chat.completions", "openai.chat", lambda data: ChatCompletion.construct(**data)),
    ("responses", "openai.responses", lambda data: Response.construct(**data)),
)
_warned_raw = False


class StreamingNotSupported(PapayyaError):
    """A streaming call was made inside a papayya attempt, where it cannot be journaled and priced."""


def instrument(client: Client, *, provider: str = "openai") -> Client:
    """Record the client's calls made inside papayya attempts; returns the same client.

    Args:
        client: An ``openai.OpenAI`` or ``openai.AsyncOpenAI``. Instrumenting twice is harmless.
        provider: The provider name the ledger prices calls under (``genai-prices`` provider id), e.g.
            ``"azure"`` for Azure OpenAI or ``"groq"`` for an OpenAI-compatible endpoint.

    Raises:
        TypeError: ``client`` is not an OpenAI client.
    """
    if not isinstance(client, openai.OpenAI | openai.AsyncOpenAI):
        raise TypeError(
            f"papayya_openai.instrument() takes an openai.OpenAI or openai.AsyncOpenAI client, "
            f"not {type(client).__name__}; for Anthropic use papayya_anthropic.instrument()."
        )
    is_async = isinstance(client, openai.AsyncOpenAI)
    for path, step, decode in _TARGETS:
        resource = _resolve(client, path)
        if resource is None or hasattr(resource.create, _ORIGINAL):
            continue
        wrap = _wrap_async if is_async else _wrap_sync
        vars(resource)["create"] = wrap(resource.create, step=step, provider=provider, decode=decode)
    for name in ("copy", "with_options"):
        method = getattr(client, name)
        if not hasattr(method, _ORIGINAL):
            vars(client)[name] = _wrap_copy(method, provider)
    return client


def uninstrument(client: Client) -> Client:
    """Undo ``instrument``: the client's calls are no longer recorded. Returns the same client."""
    for path, _step, _decode in _TARGETS:
        resource = _resolve(client, path)
        if resource is not None and hasattr(vars(resource).get("create"), _ORIGINAL):
            del vars(resource)["create"]
    for name in ("copy", "with_options"):
        if hasattr(vars(client).get(name), _ORIGINAL):
            del vars(client)[name]
    return client


def _resolve(client: Any, path: str) -> Any:
    obj = client
    for part in path.split("."):
        obj = getattr(obj, part, None)
    return obj


def _recordable(kwargs: dict[str, Any], step: str) -> bool:
    """True when this call should go through ``run.llm``; raises for a stream inside an attempt."""
    global _warned_raw
    if not run.active:
        return False
    headers = kwargs.get("extra_headers") or {}
    if any(str(h).lower().startswith("x-stainless-") and "raw-response" in str(h).lower() for h in headers):
        if not _warned_raw:
            _warned_raw = True
            log.warning(
                "%s called through with_raw_response/with_streaming_response inside a papayya attempt: "
                "the call is not recorded in the ledger or journal; call it directly to record it.",
                step,
            )
        return False
    if kwargs.get("stream"):
        raise StreamingNotSupported(
            f"{step} with stream=True is not supported inside a papayya agent (a stream cannot be "
            "journaled or priced yet); call it without stream=True."
        )
    return True


def _with_key(step: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with papayya's idempotency key as a header, unless the caller set one."""
    headers = dict(kwargs.get("extra_headers") or {})
    if not any(str(h).lower() == "idempotency-key" for h in headers):
        headers["Idempotency-Key"] = run.idempotency_key(step)
    return {**kwargs, "extra_headers": headers}


def _wrap_sync(
    original: Callable[..., Any], *, step: str, provider: str, decode: Callable[[Any], Any]
) -> Callable[..., Any]:
    @functools.wraps(original)
    def create(*args: Any, **kwargs: Any) -> Any:
        if not _recordable(kwargs, step):
            return original(*args, **kwargs)
        return run.llm(step, provider=provider, decode=decode)(original, *args, **_with_key(step, kwargs))

    setattr(create, _ORIGINAL, original)
    return create


def _wrap_async(
    original: Callable[..., Any], *, step: str, provider: str, decode: Callable[[Any], Any]
) -> Callable[..., Any]:
    @functools.wraps(original)
    async def create(*args: Any, **kwargs: Any) -> Any:
        if not _recordable(kwargs, step):
            return await original(*args, **kwargs)
        return await run.llm(step, provider=provider, decode=decode)(
            original, *args, **_with_key(step, kwargs)
        )

    setattr(create, _ORIGINAL, original)
    return create


def _wrap_copy(original: Callable[..., Any], provider: str) -> Callable[..., Any]:
    @functools.wraps(original)
    def copy(*args: Any, **kwargs: Any) -> Any:
        return instrument(original(*args, **kwargs), provider=provider)

    setattr(copy, _ORIGINAL, original)
    return copy
