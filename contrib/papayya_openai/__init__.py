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

Inside an attempt, ``client.chat.completions.create``, ``client.responses.create`` and
``client.embeddings.create`` go through ``run.llm``: the call's usage, stop reason and cost go to the
ledger (attributed to tenant, run, item and model), the response goes to the journal, and a retried
or resumed attempt gets the recorded response back, as the same SDK type (``ChatCompletion``,
``Response``, ``CreateEmbeddingResponse``), without calling OpenAI again. A ``length`` or
``content_filter`` stop degrades the item. An embeddings call reserves only its input against a
budget, as it generates no output tokens. Each call carries an ``Idempotency-Key`` header that is
stable across retries of the same step (the SDK's own ``idempotency_key`` option sends nothing for
OpenAI, so papayya sets the header itself).

Outside an attempt the client behaves exactly as before. ``instrument`` works on ``openai.OpenAI``
and ``openai.AsyncOpenAI`` (and their subclasses such as ``AzureOpenAI``; pass ``provider=`` to price
them right), instruments the copies ``with_options()`` makes, and ``uninstrument`` undoes it.

Streams are recorded too: ``create(stream=True)`` on chat completions and responses, and the
``client.chat.completions.stream(...)`` and ``client.responses.stream(...)`` helpers, which call it.
The budget gate reserves before the stream opens; the ledger row is written once, when the stream
ends or is closed, from the usage in its last event. For chat completions papayya asks for that usage
(``stream_options={"include_usage": True}``) when the caller did not, and keeps the extra usage-only
chunk (empty ``choices``) from the caller; a caller who asked gets it. A retry gets the journaled
chunks or events back through the SDK's own ``Stream``. A stream stopped short is settled on its
reservation (OpenAI reports usage only at the end) with stop reason ``abandoned:reservation``, and is
not journaled. See ``papayya.instrument`` for the rules.

Not recorded, and so not replayed or priced: ``with_raw_response`` / ``with_streaming_response``
calls and the ``parse`` helpers run as before (a warning is logged once per process for the
raw-response wrappers); ``responses.stream(response_id=...)`` resumes a stored response, unrecorded.
"""

from __future__ import annotations

import logging
from typing import TypeVar

try:
    import httpx2
    import openai
    from openai.types import CreateEmbeddingResponse
    from openai.types.chat import ChatCompletion, ChatCompletionChunk
    from openai.types.responses import Response, ResponseStreamEvent
except ImportError as exc:
    raise ImportError(
        "papayya_openai needs the openai package; install it with pip install 'papayya[openai]'."
    ) from exc

from papayya.errors import StreamingNotSupported
from papayya.instrument import Streams, Target, instrument_client, uninstrument_client

__all__ = ["StreamingNotSupported", "instrument", "uninstrument"]

log = logging.getLogger("papayya.openai")

Client = TypeVar("Client", bound=openai.OpenAI | openai.AsyncOpenAI)

_TARGETS = (
    Target(
        "chat.completions",
        step="openai.chat",
        decode=lambda data: ChatCompletion.construct(**data),
        events=ChatCompletionChunk,
        usage_option=True,
        done=True,
    ),
    Target(
        "responses",
        step="openai.responses",
        decode=lambda data: Response.construct(**data),
        events=ResponseStreamEvent,
    ),
    Target(
        "embeddings",
        step="openai.embeddings",
        decode=lambda data: CreateEmbeddingResponse.construct(**data),
        max_output_tokens=0,
    ),
)

_STREAMS = Streams(openai.Stream, openai.AsyncStream, httpx2.Response, httpx2.Request)


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
    return instrument_client(
        client, _TARGETS, provider=provider, is_async=is_async, log=log, streams=_STREAMS
    )


def uninstrument(client: Client) -> Client:
    """Undo ``instrument``: the client's calls are no longer recorded. Returns the same client."""
    return uninstrument_client(client, _TARGETS)
