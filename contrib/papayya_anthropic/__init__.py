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

``client.messages.create(stream=True)`` is recorded too: the budget gate reserves before the stream
opens; the ledger row is written once, when the stream ends or is closed, from the usage of
``message_start`` and ``message_delta``; a retry gets the journaled events back through the SDK's
own ``Stream``, and a ``max_tokens`` stop in ``message_delta`` degrades the item. A stream stopped
short is settled on the usage ``message_start`` reported (its input) with stop reason
``abandoned:reported_usage``, or on its reservation if it never came, and is not journaled. See
``papayya.instrument`` for the rules.

``with client.messages.stream(...) as stream:`` (the SDK's helper, which sends its request without
``messages.create``) goes through ``messages.create(stream=True)`` inside an attempt, so it is gated,
recorded and replayed the same way, and its ``text_stream``, ``get_final_message()`` and events work
as the SDK documents. Its ``output_format=`` (a parsed structured output) is refused inside an
attempt in one sentence: pass ``output_config`` to ``messages.create`` instead.

Not recorded, and so not replayed or priced:

- ``client.beta.messages``, and ``with_raw_response`` / ``with_streaming_response`` calls run as
  before (a warning is logged once per process for the raw-response wrappers).
"""

from __future__ import annotations

import logging
from typing import TypeVar

try:
    import anthropic
    import httpx2
    from anthropic.types import Message, RawMessageStreamEvent
except ImportError as exc:
    raise ImportError(
        "papayya_anthropic needs the anthropic package; install it with pip install 'papayya[anthropic]'."
    ) from exc

import functools
from collections.abc import Callable
from typing import Any

from anthropic.lib.streaming import AsyncMessageStreamManager, MessageStreamManager

from papayya.context import run
from papayya.errors import StreamingNotSupported
from papayya.instrument import Streams, Target, instrument_client, uninstrument_client

__all__ = ["StreamingNotSupported", "instrument", "uninstrument"]

log = logging.getLogger("papayya.anthropic")

Client = TypeVar("Client", bound=anthropic.Anthropic | anthropic.AsyncAnthropic)


def _stream_helper(resource: Any, original: Callable[..., Any]) -> Callable[..., Any]:
    """``messages.stream(...)`` that, inside an attempt, streams through the recorded ``create``."""
    is_async = isinstance(resource, anthropic.resources.AsyncMessages)

    @functools.wraps(original)
    def stream(*args: Any, **kwargs: Any) -> Any:
        if not run.active:
            return original(*args, **kwargs)
        if kwargs.pop("output_format", None) is not None:
            raise StreamingNotSupported(
                "messages.stream(output_format=...) inside a papayya attempt is not recorded; call "
                "messages.create(stream=True, output_config={'format': ...}) and parse the text instead."
            )
        if is_async:
            return AsyncMessageStreamManager(resource.create(*args, stream=True, **kwargs))
        request = functools.partial(resource.create, *args, stream=True, **kwargs)
        return MessageStreamManager(request, output_format=anthropic.NOT_GIVEN)

    return stream


_TARGETS = (
    Target(
        "messages",
        step="anthropic.messages",
        decode=lambda data: Message.construct(**data),
        events=RawMessageStreamEvent,
        helpers=(("stream", _stream_helper),),
    ),
)
_STREAMS = Streams(anthropic.Stream, anthropic.AsyncStream, httpx2.Response, httpx2.Request)


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
    is_async = isinstance(client, anthropic.AsyncAnthropic)
    return instrument_client(
        client, _TARGETS, provider=provider, is_async=is_async, log=log, streams=_STREAMS
    )


def uninstrument(client: Client) -> Client:
    """Undo ``instrument``: the client's calls are no longer recorded. Returns the same client."""
    return uninstrument_client(client, _TARGETS)
