"""Test doubles shipped with papayya, for its own tests and for yours.

``FakeProvider`` is a real HTTP server on 127.0.0.1 that answers the OpenAI Chat Completions,
Responses and Embeddings APIs and the Anthropic Messages API, streamed or not, and the AWS Bedrock
Converse API (streamed or not) and InvokeModel API, well enough for the real ``openai``,
``anthropic`` and ``boto3`` clients. It is deterministic (the reply is derived from the prompt,
token counts from text length), it counts every request it receives, and it can be told to fail::

    from papayya.testing import FakeProvider

    with FakeProvider() as fake:
        client = openai.OpenAI(base_url=fake.openai_url, api_key="test")
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        assert fake.count == 1

        fake.fail(status=429, retry_after=2)      # the next request is rate limited
        fake.stop_with("length", times=3)         # the next three answers are cut short
        fake.reply = lambda request: f"{request.model} read {len(request.prompt)} characters"

        fake.bill          # what it charged for each successful answer, priced by papayya.pricing
        fake.billed_usd    # their sum

Rules, in the order they are consulted for each request:

1. the scripted outcomes from ``fail()`` and ``stop_with()``, first match first (each may carry a
   ``when=`` predicate and a ``times=`` count);
2. ``fake.reply(request)``, which returns the reply text, a ``Reply`` or a ``Fault``
   (default: ``"You said: <the last user message>"``);
3. the request's own limit: a reply longer than ``max_tokens`` (``max_completion_tokens``,
   ``max_output_tokens``) is cut to it and stops with ``length`` / ``max_tokens``.

Tokens are counted as one per four characters (at least one): ``input_tokens`` over every text part
of the request (system prompt, instructions, messages), ``output_tokens`` over the reply.

**Bedrock Converse** (``POST /model/{modelId}/converse``, the model id URL-encoded in the path as
boto3 sends it; point ``boto3.client("bedrock-runtime", endpoint_url=fake.url, ...)`` at it): the
request's ``messages`` and ``system`` content blocks (``{"text": ...}``) are the prompt and
``inferenceConfig.maxTokens`` the limit; the answer is ``{"output": {"message": ...}, "stopReason",
"usage": {"inputTokens", "outputTokens", "totalTokens"}, "metrics"}`` (``usage`` also carries
``cacheReadInputTokens``/``cacheWriteInputTokens`` when a ``Reply`` gives cached tokens, and
``inputTokens`` then leaves them out, as Bedrock reports). Stop reasons are Bedrock's: ``length`` is
``max_tokens``, ``content_filter`` is ``content_filtered``. Its errors are ``{"message": ...}`` with
the ``x-amzn-ErrorType`` header boto3 reads the error code from (``ThrottlingException`` for 429,
``ValidationException`` for 400...). boto3 sends no ``Idempotency-Key``, so its bill entries have none.

**Bedrock ConverseStream** (``POST /model/{modelId}/converse-stream``, api ``bedrock.converse_stream``):
the same answer as Converse, billed the same, sent as AWS's binary event stream
(``application/vnd.amazon.eventstream``, framed by ``encode_event_message``; botocore ships only the
decoder): ``messageStart``, ``contentBlockDelta`` text pieces, ``contentBlockStop``, ``messageStop``
(``stopReason``) and ``metadata`` (``usage``, ``metrics``); ``converse_stream_events(answer)`` gives the
events boto3 yields for a Converse answer. A fault is an HTTP error before any event.

**Bedrock InvokeModel** (``POST /model/{modelId}/invoke``, api ``bedrock.invoke``): the body in the model
family's own shape, by the model id (after a cross-region prefix such as ``us.``): ``anthropic.*`` a
Messages answer (``usage.input_tokens``/``output_tokens``, ``stop_reason``; its request's ``messages``,
``system`` and ``max_tokens``); ``meta.llama*`` ``{"generation", "prompt_token_count",
"generation_token_count", "stop_reason"}`` (``stop``/``length``; its request's ``prompt`` and
``max_gen_len``); ``amazon.titan-text*`` ``{"inputTextTokenCount", "results": [{"tokenCount",
"outputText", "completionReason"}]}`` (``FINISH``/``LENGTH``/``CONTENT_FILTERED``; its request's
``inputText`` and ``textGenerationConfig.maxTokenCount``). Any other model is answered
``{"text": ...}``, billed all the same. ``Reply(report_usage=False)`` leaves out the token counts.

Embeddings (``POST /v1/embeddings``) are answered with one deterministic unit vector per input, derived
from the input alone (``fake_embedding``), ``dimensions`` long (default 1536, as text-embedding-3-small),
as floats or base64 as the request's ``encoding_format`` asks. ``usage.prompt_tokens`` counts each text
input as above and each token-array input by its length. ``fail()`` applies to them like to any request;
``stop_with()`` and ``reply`` do not (an embedding has no stop reason and no text).

**The bill.** Every request answered 200 (chat completion, response, message, embeddings; streamed
or not) is billed once, in ``fake.bill``: its idempotency key, API, the model the response reports,
the token counts the response reports, and their cost from ``papayya.pricing.price_call`` at public
prices, the same function papayya's ledger prices calls with, so the two agree to the last digit
(``None`` for a model the catalog does not price). Token counts are in papayya's spelling
(``pricing.Usage``): input tokens include cached ones, as the ledger records them, although
Anthropic's response reports them apart. Errors, told or not, are not billed. An entry is in the bill
before its response is sent.

**Streams.** A request with ``"stream": true`` is answered as Server-Sent Events in the provider's
shape, with the same reply, stop reason, usage and bill as the same request without it (the rules
above apply alike; a fault is an HTTP error before any event, as the providers answer one):

- Chat Completions: ``chat.completion.chunk`` chunks (the role, the text in pieces, then
  ``finish_reason``), and with ``stream_options.include_usage`` a last chunk with empty ``choices``
  and the ``usage`` (every other chunk then carries ``"usage": null``); then ``data: [DONE]``;
- Responses: ``response.created``, ``response.in_progress``, the output item and text events
  (``response.output_text.delta``...), then ``response.completed`` (``response.incomplete`` when cut
  short) carrying the whole response and its ``usage``;
- Anthropic Messages: ``message_start`` (input usage), ``content_block_start``, ``ping``,
  ``content_block_delta`` pieces, ``content_block_stop``, ``message_delta`` (``stop_reason`` and the
  usage) and ``message_stop``.

The text is sent in pieces of about 8 characters. The whole stream is written at once and billed in
full when it is answered, as the non-streamed answer is, even if the client stops reading midway.

**Batches.** The fake also answers the providers' batch APIs (OpenAI ``/v1/files`` + ``/v1/batches``,
Anthropic ``/v1/messages/batches``; details in ``papayya.fake_batches``). Each row is answered when its
batch completes, by the rules above, and is in ``fake.requests`` with its ``batch_id`` and
``custom_id``; each row answered 200 is billed at the provider's batch rate (``BillEntry.mode``
``"batch"``). Tests steer them with ``fake.batch_delay`` (seconds from creation until a read of a batch
completes it; default 0, the first read), ``fake.hold_batches()`` / ``fake.release_batches()``,
``fake.finish_batches()`` (complete every open batch now), ``fake.advance_batches(rows)`` (answer some
rows, complete none), ``fake.expire(when=None, times=None)`` (matching rows expire instead of being
answered: OpenAI ``batch_expired`` rows, a batch of only those ends ``expired``; Anthropic ``expired``
results), ``fake.batch_limits`` (``BatchLimits``: requests and bytes per batch) and ``fake.batches``
(``BatchSnapshot``s). A cancelled batch's unanswered rows are ``canceled`` (Anthropic) or absent from
its files (OpenAI), and not billed.

Each error body has the provider's shape, so the SDKs raise their usual exceptions
(``RateLimitError``, ``InternalServerError``, ``OverloadedError``...).

The server speaks HTTP/1.0 (one request per connection) with a thread per connection and a listen
backlog of 1,024, so a load test's burst of hundreds of simultaneous requests is accepted rather than
refused; its lock is held only to number a request and to record it. It needs nothing outside the
standard library and papayya's own pricing, and runs in daemon threads, so a forgotten ``stop()``
cannot hang the interpreter.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import math
import random
import re
import struct
import threading
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, cast
from urllib.parse import unquote

from papayya.fake_batches import BatchControls, BatchLimits, BatchSnapshot, BatchStore
from papayya.pricing import Usage, price_call

__all__ = [
    "BatchLimits",
    "BatchSnapshot",
    "BillEntry",
    "FakeProvider",
    "FakeRequest",
    "Fault",
    "Reply",
    "converse_stream_events",
    "count_tokens",
    "encode_event",
    "encode_event_message",
    "fake_embedding",
]

Api = Literal[
    "openai.chat",
    "openai.responses",
    "openai.embeddings",
    "anthropic.messages",
    "bedrock.converse",
    "bedrock.converse_stream",
    "bedrock.invoke",
]

_ROUTES: dict[str, Api] = {
    "/v1/chat/completions": "openai.chat",
    "/v1/responses": "openai.responses",
    "/v1/embeddings": "openai.embeddings",
    "/v1/messages": "anthropic.messages",
}
# The model id URL-encoded in the path, then the operation.
_BEDROCK_ROUTE = re.compile(r"/model/(?P<model>[^/]+)/(?P<op>converse|converse-stream|invoke)")
_BEDROCK_OPS: dict[str, Api] = {
    "converse": "bedrock.converse",
    "converse-stream": "bedrock.converse_stream",
    "invoke": "bedrock.invoke",
}
EMBEDDING_DIMENSIONS = 1536  # text-embedding-3-small's, when the request does not ask for fewer

# Stop reasons in papayya's spelling (OpenAI's) and Anthropic's; anything else passes through as given.
_OPENAI_STOP = {
    "stop": "stop",
    "end_turn": "stop",
    "length": "length",
    "max_tokens": "length",
    "content_filter": "content_filter",
    "refusal": "content_filter",
}
_ANTHROPIC_STOP = {
    "stop": "end_turn",
    "end_turn": "end_turn",
    "length": "max_tokens",
    "max_tokens": "max_tokens",
    "content_filter": "refusal",
    "refusal": "refusal",
}
_BEDROCK_STOP = {
    "stop": "end_turn",
    "end_turn": "end_turn",
    "length": "max_tokens",
    "max_tokens": "max_tokens",
    "content_filter": "content_filtered",
    "refusal": "content_filtered",
}
# Responses API: why a response is "incomplete"; a reason not listed here means "completed".
_RESPONSES_INCOMPLETE = {
    "length": "max_output_tokens",
    "max_tokens": "max_output_tokens",
    "max_output_tokens": "max_output_tokens",
    "content_filter": "content_filter",
    "refusal": "content_filter",
}
_OPENAI_ERROR_TYPES = {400: "invalid_request_error", 404: "not_found_error", 429: "rate_limit_exceeded"}
_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    404: "not_found_error",
    429: "rate_limit_error",
    529: "overloaded_error",
}
_BEDROCK_ERROR_TYPES = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    503: "ServiceUnavailableException",
}
_CREATED = 1_700_000_000  # a fixed timestamp keeps responses byte-for-byte reproducible
_EXPIRED = 0  # the status _answer gives a batch row an expire() rule took: it was never answered


def count_tokens(text: str) -> int:
    """The fake's tokenizer: one token per four characters, at least one."""
    return max(1, (len(text) + 3) // 4)


def fake_embedding(value: str | list[int], dimensions: int = EMBEDDING_DIMENSIONS) -> list[float]:
    """The unit vector the fake answers for one embeddings input (a text or an array of token ids)."""
    text = value if isinstance(value, str) else json.dumps(value)
    seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")
    rng = random.Random(seed)
    vector = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


@dataclass
class FakeRequest:
    """One request the fake received.

    Attributes:
        api: ``"openai.chat"``, ``"openai.responses"``, ``"openai.embeddings"``,
            ``"anthropic.messages"``, ``"bedrock.converse"``, ``"bedrock.converse_stream"`` or
            ``"bedrock.invoke"``.
        model: The ``model`` field of the request body (Bedrock: the model id in the path).
        body: The parsed JSON body.
        headers: Request headers, names lower-cased.
        prompt: Every text part of the request (system, instructions, messages; each embeddings
            input), one per line.
        number: 1 for the first request this fake received, 2 for the next, and so on.
        status: The HTTP status the fake answered with (0 while it is being answered).
        batch_id: The provider batch this request is a row of; None for a live request.
        custom_id: The row's ``custom_id`` in that batch; None for a live request.
    """

    api: Api
    model: str
    body: dict[str, Any]
    headers: dict[str, str]
    prompt: str
    number: int
    status: int = 0
    batch_id: str | None = None
    custom_id: str | None = None

    @property
    def idempotency_key(self) -> str | None:
        """The ``Idempotency-Key`` header, if the client sent one."""
        return self.headers.get("idempotency-key")

    @property
    def last_user_message(self) -> str:
        """The text of the last user message (or the whole input when it is a plain string; a Bedrock
        InvokeModel body's ``prompt`` or ``inputText``)."""
        messages = self.body.get("messages")
        for name in ("prompt", "inputText"):
            if messages is None and self.api == "bedrock.invoke" and isinstance(self.body.get(name), str):
                return str(self.body[name])
        if messages is None:
            value = self.body.get("input")
            messages = [{"role": "user", "content": value}] if isinstance(value, str) else value or []
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role", "user") == "user":
                return "\n".join(_texts(message.get("content")))
        return ""

    @property
    def max_tokens(self) -> int | None:
        for name in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
            value = self.body.get(name)
            if isinstance(value, int):
                return value
        if isinstance(self.body.get("max_gen_len"), int):  # Bedrock InvokeModel, Meta Llama
            return int(self.body["max_gen_len"])
        for section, name in (("inferenceConfig", "maxTokens"), ("textGenerationConfig", "maxTokenCount")):
            config = self.body.get(section)  # Bedrock Converse; InvokeModel, Amazon Titan
            value = config.get(name) if isinstance(config, dict) else None
            if isinstance(value, int):
                return value
        return None


@dataclass(frozen=True, slots=True)
class BillEntry:
    """One answer the fake billed.

    Attributes:
        idempotency_key: The request's ``Idempotency-Key`` header (None if it had none).
        api: Which API answered (as ``FakeRequest.api``).
        model: The model the response reports (the one asked for, unless the reply names another),
            which is the model papayya's ledger records.
        input_tokens: Prompt tokens, cached ones included (papayya's count; Anthropic's response
            reports ``input_tokens`` without the cached ones).
        output_tokens: Completion tokens (0 for embeddings).
        cache_read_tokens: Prompt tokens read from the cache.
        cache_write_tokens: Prompt tokens written to the cache (Anthropic and Bedrock; OpenAI reports
            none).
        cost_usd: ``papayya.pricing.price_call`` of that usage at public prices; None when unpriced.
        number: The ``FakeRequest.number`` of the request this answers.
        mode: ``"live"``, or ``"batch"`` for a row of a provider batch, priced at the batch rate
            (``price_call(..., mode="batch")``).
        batch_id: The provider batch of that row; None for a live request.
    """

    idempotency_key: str | None
    api: Api
    model: str
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: Decimal | None
    number: int
    mode: str = "live"
    batch_id: str | None = None

    @property
    def provider(self) -> str:
        """``"openai"``, ``"anthropic"`` or ``"bedrock"``, as papayya's clients name the provider."""
        return _provider(self.api)

    @property
    def usage(self) -> Usage:
        """The token counts as the ``papayya.pricing.Usage`` they were priced from."""
        return Usage(self.input_tokens, self.output_tokens, self.cache_read_tokens, self.cache_write_tokens)


@dataclass(frozen=True)
class Reply:
    """A successful answer.

    Attributes:
        text: The assistant's text.
        stop: Why it stopped, in either spelling (``"stop"``/``"end_turn"``, ``"length"``/``"max_tokens"``,
            ``"content_filter"``/``"refusal"``); translated for each API, other values sent as given.
        input_tokens: Prompt tokens including cached ones (default: counted from the prompt).
        output_tokens: Completion tokens (default: counted from ``text``).
        cached_tokens: Prompt tokens read from the provider's cache.
        cache_write_tokens: Prompt tokens written to the cache (Anthropic and Bedrock only).
        model: The model to report (default: the one asked for; Bedrock reports none).
        report_usage: False: the answer leaves out its ``usage`` (a non-streamed answer; streams keep
            it). It is billed all the same, as a provider bills what it does not report.
    """

    text: str
    stop: str = "stop"
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    model: str | None = None
    report_usage: bool = True


@dataclass(frozen=True)
class Fault:
    """An error answer: ``status`` with the provider's error body, and ``Retry-After`` when given."""

    status: int = 500
    retry_after: float | None = None
    message: str = "the fake provider was told to fail this request"


ReplyFn = Callable[[FakeRequest], "str | Reply | Fault"]
# An answer: status, extra headers, body, and for a billable one the model and usage it bills.
_Answer = tuple[int, dict[str, str], Any, tuple[str, Usage] | None]


@dataclass
class _Rule:
    """A scripted outcome: a fault, or a normal reply with another stop reason."""

    times: int | None
    when: Callable[[FakeRequest], bool] | None
    fault: Fault | None = None
    stop: str | None = None
    expire: bool = False  # a row of a provider batch expires instead of being answered


def default_reply(request: FakeRequest) -> str:
    """``"You said: <the last user message>"``."""
    return f"You said: {request.last_user_message}"


class FakeProvider(BatchControls):
    """A local OpenAI-, Anthropic- and Bedrock-compatible HTTP server that counts requests, bills the
    ones it answers and fails on demand.

    Use it as a context manager, or call ``start()`` and ``stop()``. Safe to use from many threads.

    Attributes:
        reply: ``request -> str | Reply | Fault``; decides every answer not scripted by ``fail()`` or
            ``stop_with()``. Replace it freely.
    """

    def __init__(self, reply: ReplyFn | None = None) -> None:
        self.reply: ReplyFn = reply or default_reply
        self._lock = threading.RLock()  # re-entrant: a ``when`` predicate may read ``fake.count``
        self._requests: list[FakeRequest] = []
        self._bill: list[BillEntry] = []
        self._rules: list[_Rule] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._batch_store = BatchStore(self._answer_row)

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> FakeProvider:
        """Listen on a free port of 127.0.0.1 and serve in a daemon thread."""
        if self._server is not None:
            return self
        server = _Server(self)
        self._server = server
        # A short poll interval makes stop() quick; the server is idle the rest of the time anyway.
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.02,), name="papayya-fake-provider", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        if self._server is None:
            raise RuntimeError("The fake provider is not running; call start() or use it in a with block.")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def openai_url(self) -> str:
        """The ``base_url`` for ``openai.OpenAI`` (ends in ``/v1``)."""
        return f"{self.url}/v1"

    @property
    def anthropic_url(self) -> str:
        """The ``base_url`` for ``anthropic.Anthropic``."""
        return self.url

    # -- scripting --------------------------------------------------------------------------------

    def fail(
        self,
        status: int = 500,
        *,
        times: int | None = 1,
        retry_after: float | None = None,
        message: str | None = None,
        when: Callable[[FakeRequest], bool] | None = None,
    ) -> None:
        """Answer the next ``times`` requests (matching ``when``) with HTTP ``status``; None = forever."""
        self._script(_Rule(times, when, fault=Fault(status, retry_after, message or Fault.message)))

    def stop_with(
        self, reason: str, *, times: int | None = 1, when: Callable[[FakeRequest], bool] | None = None
    ) -> None:
        """Answer the next ``times`` requests (matching ``when``) normally, but stopping for ``reason``.

        ``reason`` in either spelling: ``"length"``/``"max_tokens"``, ``"content_filter"``/``"refusal"``.
        """
        self._script(_Rule(times, when, stop=reason))

    def expire(self, when: Callable[[FakeRequest], bool] | None = None, times: int | None = None) -> None:
        """Let the next ``times`` rows of provider batches (matching ``when``) expire instead of being
        answered; None = forever. Live requests are never expired."""
        self._script(_Rule(times, when, expire=True))

    def _script(self, rule: _Rule) -> None:
        with self._lock:
            self._rules.append(rule)

    def reset(self) -> None:
        """Forget the requests seen, the bill, the scripted outcomes and the batches and files (``reply``
        and the batch controls are kept)."""
        with self._lock:
            self._requests.clear()
            self._bill.clear()
            self._rules.clear()
        self._batch_store.clear()

    # -- counting ---------------------------------------------------------------------------------

    @property
    def requests(self) -> list[FakeRequest]:
        """Every request received so far, answered or failed, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def count(self) -> int:
        """How many requests were received (failed ones included)."""
        with self._lock:
            return len(self._requests)

    @property
    def counts(self) -> Counter[str]:
        """Requests received per model."""
        with self._lock:
            return Counter(r.model for r in self._requests)

    @property
    def idempotency_keys(self) -> list[str | None]:
        """The ``Idempotency-Key`` header of every request (None where absent), oldest first."""
        with self._lock:
            return [r.idempotency_key for r in self._requests]

    @property
    def bill(self) -> list[BillEntry]:
        """One entry per request answered 200, in the order they were answered; faults are free."""
        with self._lock:
            return list(self._bill)

    @property
    def billed_usd(self) -> Decimal:
        """The sum of the bill's priced entries (an unpriced model's calls add nothing)."""
        return sum((e.cost_usd for e in self.bill if e.cost_usd is not None), Decimal(0))

    # -- answering --------------------------------------------------------------------------------

    def _answer(
        self,
        api: Api,
        body: dict[str, Any],
        headers: dict[str, str],
        model: str | None = None,
        batch: tuple[str, str] | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        prompt = "\n".join(_prompt_texts(api, body))
        with self._lock:
            request = FakeRequest(
                api=api,
                model=model if model is not None else str(body.get("model") or ""),
                body=body,
                headers=headers,
                prompt=prompt,
                number=len(self._requests) + 1,
                batch_id=batch[0] if batch else None,
                custom_id=batch[1] if batch else None,
            )
            self._requests.append(request)
            rule = next((r for r in self._rules if _applies(r, request)), None)
            if rule is not None and rule.times is not None:
                rule.times -= 1
                if rule.times <= 0:
                    self._rules.remove(rule)
            if rule is not None and rule.expire:  # never answered: neither received nor billed
                self._requests.remove(request)
                return _EXPIRED, {}, None
        status, extra, payload, billed = self._respond(request, rule)
        entry = None if billed is None else _bill_entry(request, *billed)  # priced outside the lock
        with self._lock:
            request.status = status
            if entry is not None:
                self._bill.append(entry)
        return status, extra, payload

    def _answer_row(
        self, api: str, body: dict[str, Any], batch_id: str, custom_id: str
    ) -> tuple[int, Any] | None:
        """Answer one row of a provider batch as the live request it holds; None if it expired."""
        try:
            status, _, payload = self._answer(cast(Api, api), body, {}, batch=(batch_id, custom_id))
        except Exception as exc:  # a broken ``when`` predicate: an errored row, as live it is a 500
            status, _, payload = _error(
                cast(Api, api), Fault(500, message=f"the fake provider failed: {exc!r}")
            )
        return None if status == _EXPIRED else (status, payload)

    def _respond(self, request: FakeRequest, rule: _Rule | None) -> _Answer:
        """The answer, and for a 200 the (model, usage) it bills."""
        if not request.model:
            return *_error(request.api, Fault(400, message="model is required")), None
        if rule is not None and rule.fault is not None:
            return *_error(request.api, rule.fault), None
        if request.api == "openai.embeddings":
            return _embeddings(request)
        try:
            answer = self.reply(request)
        except Exception as exc:  # a broken reply hook answers 500 instead of dropping the connection
            return *_error(request.api, Fault(500, message=f"reply hook raised {exc!r}")), None
        if isinstance(answer, Fault):
            return *_error(request.api, answer), None
        reply = Reply(answer) if isinstance(answer, str) else answer
        if rule is not None and rule.stop is not None:
            reply = dataclasses.replace(reply, stop=rule.stop)
        reply = _limit(reply, request.max_tokens)
        usage = _usage(request, reply)
        model = reply.model or request.model
        if request.api == "bedrock.converse_stream":
            events = _converse_stream_events(_converse(request, reply, model, usage))
            return 200, {}, _Binary(b"".join(events), _EVENT_STREAM), (model, usage)
        if request.api == "bedrock.invoke":
            data = json.dumps(_invoke_body(request, reply, model, usage)).encode()
            return 200, {}, _Binary(data, "application/json"), (model, usage)
        body = _BUILDERS[request.api](request, reply, model, usage)
        if request.body.get("stream") is True and request.api in _STREAMERS:
            return 200, {}, _Events(_STREAMERS[request.api](request, body)), (model, usage)
        if not reply.report_usage:
            body = {k: v for k, v in body.items() if k != "usage"}
        return 200, {}, body, (model, usage)


def _provider(api: Api) -> str:
    if api == "anthropic.messages":
        return "anthropic"
    return "bedrock" if api.startswith("bedrock.") else "openai"


def _bill_entry(request: FakeRequest, model: str, usage: Usage) -> BillEntry:
    mode = "live" if request.batch_id is None else "batch"
    return BillEntry(
        idempotency_key=request.idempotency_key,
        api=request.api,
        model=model,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        cost_usd=price_call(_provider(request.api), model, usage, {}, mode=mode).cost_usd,
        number=request.number,
        mode=mode,
        batch_id=request.batch_id,
    )


def _applies(rule: _Rule, request: FakeRequest) -> bool:
    if rule.expire and request.batch_id is None:
        return False  # only a batch's row can expire
    if rule.stop is not None and request.api == "openai.embeddings":
        return False  # an embedding has no stop reason to change
    return rule.when is None or rule.when(request)


def _limit(reply: Reply, max_tokens: int | None) -> Reply:
    if max_tokens is None or reply.output_tokens is not None or count_tokens(reply.text) <= max_tokens:
        return reply
    return dataclasses.replace(reply, text=reply.text[: max_tokens * 4], stop="length")


def _texts(content: Any) -> list[str]:
    """Text parts of a message ``content`` (a string or a list of blocks) or a system prompt."""
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    out: list[str] = []
    for block in content if isinstance(content, list) else [content]:
        if isinstance(block, str):
            out.append(block)
        elif isinstance(block, dict) and isinstance(block.get("text"), str):
            out.append(block["text"])
        elif isinstance(block, dict) and "content" in block:
            out.extend(_texts(block["content"]))
    return out


def _prompt_texts(api: Api, body: dict[str, Any]) -> list[str]:
    if api == "openai.embeddings":
        return [v if isinstance(v, str) else json.dumps(v) for v in _embedding_inputs(body.get("input"))]
    texts = _texts(body.get("system")) + _texts(body.get("instructions"))
    if api == "openai.responses":
        return texts + _texts(body.get("input"))
    if api == "bedrock.invoke":  # Meta Llama's and Amazon Titan's bodies hold one prompt
        texts += _texts(body.get("prompt")) + _texts(body.get("inputText"))
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            texts.extend(_texts(message.get("content")))
    return texts


def _usage(request: FakeRequest, reply: Reply) -> Usage:
    """What a reply used, as papayya counts it: input tokens include the cached ones."""
    prompt = reply.input_tokens if reply.input_tokens is not None else count_tokens(request.prompt)
    output = reply.output_tokens if reply.output_tokens is not None else count_tokens(reply.text)
    if request.api == "anthropic.messages" or request.api.startswith("bedrock."):
        # Anthropic and Bedrock report the uncached input apart from the cached: the total is at least that.
        cached = reply.cached_tokens + reply.cache_write_tokens
        return Usage(max(prompt, cached), output, reply.cached_tokens, reply.cache_write_tokens)
    return Usage(prompt, output, cache_read_tokens=reply.cached_tokens)  # OpenAI: no cache writes


def _chat_completion(request: FakeRequest, reply: Reply, model: str, usage: Usage) -> dict[str, Any]:
    prompt, completion = usage.input_tokens, usage.output_tokens
    return {
        "id": f"chatcmpl-fake-{request.number}",
        "object": "chat.completion",
        "created": _CREATED,
        "model": model,
        "system_fingerprint": "fp_papayya_fake",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply.text, "refusal": None, "annotations": []},
                "finish_reason": _OPENAI_STOP.get(reply.stop, reply.stop),
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": usage.cache_read_tokens, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        },
    }


def _response(request: FakeRequest, reply: Reply, model: str, usage: Usage) -> dict[str, Any]:
    prompt, completion = usage.input_tokens, usage.output_tokens
    incomplete = _RESPONSES_INCOMPLETE.get(reply.stop)
    return {
        "id": f"resp_fake_{request.number}",
        "object": "response",
        "created_at": _CREATED,
        "model": model,
        "status": "incomplete" if incomplete else "completed",
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "error": None,
        "instructions": request.body.get("instructions"),
        "output": [
            {
                "type": "message",
                "id": f"msg_fake_{request.number}",
                "role": "assistant",
                "status": "incomplete" if incomplete else "completed",
                "content": [{"type": "output_text", "text": reply.text, "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": usage.cache_read_tokens},
            "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + completion,
        },
    }


def _message(request: FakeRequest, reply: Reply, model: str, usage: Usage) -> dict[str, Any]:
    cached = usage.cache_read_tokens + usage.cache_write_tokens
    return {
        "id": f"msg_fake_{request.number}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": reply.text}],
        "stop_reason": _ANTHROPIC_STOP.get(reply.stop, reply.stop),
        "stop_sequence": None,
        "usage": {
            # Anthropic's input_tokens leaves out what was read from or written to the cache.
            "input_tokens": usage.input_tokens - cached,
            "output_tokens": usage.output_tokens,
            "cache_read_input_tokens": usage.cache_read_tokens,
            "cache_creation_input_tokens": usage.cache_write_tokens,
        },
    }


def _converse(request: FakeRequest, reply: Reply, model: str, usage: Usage) -> dict[str, Any]:
    # Bedrock's inputTokens leaves out the prompt tokens read from or written to the cache.
    fresh = usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens
    reported: dict[str, int] = {
        "inputTokens": fresh,
        "outputTokens": usage.output_tokens,
        "totalTokens": usage.input_tokens + usage.output_tokens,
    }
    if usage.cache_read_tokens or usage.cache_write_tokens:
        reported["cacheReadInputTokens"] = usage.cache_read_tokens
        reported["cacheWriteInputTokens"] = usage.cache_write_tokens
    return {
        "output": {"message": {"role": "assistant", "content": [{"text": reply.text}]}},
        "stopReason": _BEDROCK_STOP.get(reply.stop, reply.stop),
        "usage": reported,
        "metrics": {"latencyMs": 1},
    }


def _embedding_inputs(value: Any) -> list[str | list[int]]:
    """The inputs of an embeddings request: a text, texts, one token array, or token arrays."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str | list)]
    return []


def _embeddings(request: FakeRequest) -> _Answer:
    inputs = _embedding_inputs(request.body.get("input"))
    if not inputs or any(v in ("", []) for v in inputs):
        return *_error(request.api, Fault(400, message="input must be a non-empty string or array")), None
    dimensions = request.body.get("dimensions")
    size = dimensions if isinstance(dimensions, int) and dimensions > 0 else EMBEDDING_DIMENSIONS
    as_base64 = request.body.get("encoding_format") == "base64"
    data = []
    for index, value in enumerate(inputs):
        vector = fake_embedding(value, size)
        encoded: Any = base64.b64encode(struct.pack(f"<{size}f", *vector)).decode() if as_base64 else vector
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    tokens = sum(count_tokens(v) if isinstance(v, str) else len(v) for v in inputs)
    return (
        200,
        {},
        {
            "object": "list",
            "data": data,
            "model": request.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        },
        (request.model, Usage(input_tokens=tokens)),
    )


# -- Bedrock InvokeModel and ConverseStream ---------------------------------------------------------

_LLAMA_STOP = {"stop": "stop", "end_turn": "stop", "length": "length", "max_tokens": "length"}
_TITAN_STOP = {
    "stop": "FINISH",
    "end_turn": "FINISH",
    "length": "LENGTH",
    "max_tokens": "LENGTH",
    "content_filter": "CONTENT_FILTERED",
    "refusal": "CONTENT_FILTERED",
}


# The families whose InvokeModel body the fake answers in its own shape, after a cross-region prefix
# (``us.``, ``global.``...) or an ARN's path.
_FAMILY = re.compile(r"(?:[a-z-]+\.)?(anthropic|meta\.llama|amazon\.titan-text)")


def _invoke_body(request: FakeRequest, reply: Reply, model: str, usage: Usage) -> dict[str, Any]:
    """An InvokeModel answer in the model family's own shape (Anthropic Messages, Meta Llama, Amazon
    Titan text); any other family: ``{"text": ...}``, which papayya does not read."""
    found = _FAMILY.match(request.model.rsplit("/", 1)[-1])
    family = found[1] if found else None
    if family == "anthropic":
        body = {k: v for k, v in _message(request, reply, model, usage).items() if k != "model"}
        return body if reply.report_usage else {k: v for k, v in body.items() if k != "usage"}
    if family == "meta.llama":
        counts = {"prompt_token_count": usage.input_tokens, "generation_token_count": usage.output_tokens}
        return {
            "generation": reply.text,
            **(counts if reply.report_usage else {}),
            "stop_reason": _LLAMA_STOP.get(reply.stop, reply.stop),
        }
    if family == "amazon.titan-text":
        result = {
            "tokenCount": usage.output_tokens,
            "outputText": reply.text,
            "completionReason": _TITAN_STOP.get(reply.stop, reply.stop),
        }
        if not reply.report_usage:
            return {"results": [{k: v for k, v in result.items() if k != "tokenCount"}]}
        return {"inputTextTokenCount": usage.input_tokens, "results": [result]}
    return {"text": reply.text}


_EVENT_STREAM = "application/vnd.amazon.eventstream"


def encode_event_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One message of AWS's binary event stream (``application/vnd.amazon.eventstream``), which
    botocore only decodes (``botocore.eventstream``).

    The frame: a prelude of the total length and the headers' length (big-endian uint32 each) and the
    CRC32 of those 8 bytes; the headers, each a 1-byte name length, the name, the value type (7: a
    string), a 2-byte value length and the value; the payload; and the CRC32 of everything before it.
    """
    encoded = b""
    for name, value in headers.items():
        key, data = name.encode(), value.encode()
        encoded += struct.pack(">B", len(key)) + key + struct.pack(">BH", 7, len(data)) + data
    total = 12 + len(encoded) + len(payload) + 4
    prelude = struct.pack(">II", total, len(encoded))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + encoded + payload
    return message + struct.pack(">I", zlib.crc32(message))


def encode_event(event_type: str, payload: dict[str, Any]) -> bytes:
    """An event of a Bedrock stream (``:message-type`` ``event``) with its JSON payload."""
    headers = {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"}
    return encode_event_message(headers, json.dumps(payload).encode())


def converse_stream_events(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """The ConverseStream events that add up to a Converse ``answer``, as boto3 yields them."""
    text = answer["output"]["message"]["content"][0]["text"]
    events: list[dict[str, Any]] = [{"messageStart": {"role": "assistant"}}]
    events += [{"contentBlockDelta": {"delta": {"text": p}, "contentBlockIndex": 0}} for p in _pieces(text)]
    events += [
        {"contentBlockStop": {"contentBlockIndex": 0}},
        {"messageStop": {"stopReason": answer["stopReason"]}},
        {"metadata": {"usage": answer.get("usage", {}), "metrics": answer["metrics"]}},
    ]
    return events


def _converse_stream_events(answer: dict[str, Any]) -> list[bytes]:
    return [encode_event(*next(iter(e.items()))) for e in converse_stream_events(answer)]


@dataclass(frozen=True)
class _Binary:
    """An answer's body as bytes, with its content type."""

    data: bytes
    content_type: str


_BUILDERS: dict[Api, Callable[[FakeRequest, Reply, str, Usage], dict[str, Any]]] = {
    "openai.chat": _chat_completion,
    "openai.responses": _response,
    "anthropic.messages": _message,
    "bedrock.converse": _converse,
}


@dataclass(frozen=True)
class _Events:
    """A streamed answer: Server-Sent Events as (event name or None, data)."""

    events: list[tuple[str | None, Any]]

    def encode(self) -> bytes:
        out = []
        for name, data in self.events:
            line = data if isinstance(data, str) else json.dumps(data)
            out.append((f"event: {name}\n" if name else "") + f"data: {line}\n\n")
        return "".join(out).encode()


_PIECE = 8  # characters of text per streamed delta


def _pieces(text: str) -> list[str]:
    return [text[i : i + _PIECE] for i in range(0, len(text), _PIECE)]


def _chat_chunks(request: FakeRequest, completion: dict[str, Any]) -> list[tuple[str | None, Any]]:
    include_usage = bool((request.body.get("stream_options") or {}).get("include_usage"))
    choice = completion["choices"][0]
    head = {k: completion[k] for k in ("id", "object", "created", "model", "system_fingerprint")}
    head["object"] = "chat.completion.chunk"

    def chunk(delta: dict[str, Any], finish: str | None = None) -> tuple[None, dict[str, Any]]:
        data: dict[str, Any] = {
            **head,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:  # as the API does: "usage": null on every chunk but the last
            data["usage"] = None
        return None, data

    chunks = [chunk({"role": "assistant", "content": "", "refusal": None})]
    chunks += [chunk({"content": piece}) for piece in _pieces(choice["message"]["content"])]
    chunks.append(chunk({}, choice["finish_reason"]))
    if include_usage:
        chunks.append((None, {**head, "choices": [], "usage": completion["usage"]}))
    return [*chunks, (None, "[DONE]")]


def _response_events(request: FakeRequest, response: dict[str, Any]) -> list[tuple[str | None, Any]]:
    item = response["output"][0]
    text = item["content"][0]["text"]
    started = {**response, "status": "in_progress", "incomplete_details": None, "output": [], "usage": None}
    ids = {"item_id": item["id"], "output_index": 0, "content_index": 0}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": started},
        {"type": "response.in_progress", "response": started},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {**item, "status": "in_progress", "content": []},
        },
        {
            "type": "response.content_part.added",
            **ids,
            "part": {"type": "output_text", "text": "", "annotations": []},
        },
    ]
    events += [
        {"type": "response.output_text.delta", **ids, "delta": piece, "logprobs": []}
        for piece in _pieces(text)
    ]
    events += [
        {"type": "response.output_text.done", **ids, "text": text, "logprobs": []},
        {"type": "response.content_part.done", **ids, "part": item["content"][0]},
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {
            "type": "response.incomplete" if response["status"] == "incomplete" else "response.completed",
            "response": response,
        },
    ]
    return [(e["type"], {**e, "sequence_number": n}) for n, e in enumerate(events)]


def _message_events(request: FakeRequest, message: dict[str, Any]) -> list[tuple[str | None, Any]]:
    usage = message["usage"]
    start_usage = {**usage, "output_tokens": 1}  # as the API does: the input now, the output at the end
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None, "usage": start_usage}
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": start},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
    ]
    events += [
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}
        for piece in _pieces(message["content"][0]["text"])
    ]
    events += [
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
            "usage": usage,
        },
        {"type": "message_stop"},
    ]
    return [(e["type"], e) for e in events]


_STREAMERS: dict[Api, Callable[[FakeRequest, dict[str, Any]], list[tuple[str | None, Any]]]] = {
    "openai.chat": _chat_chunks,
    "openai.responses": _response_events,
    "anthropic.messages": _message_events,
}


def _error(api: Api, fault: Fault) -> tuple[int, dict[str, str], Any]:
    headers = {} if fault.retry_after is None else {"retry-after": f"{fault.retry_after:g}"}
    if api.startswith("bedrock."):  # boto3 reads the error code from the header, the message from the body
        kind = _BEDROCK_ERROR_TYPES.get(fault.status, "InternalServerException")
        return fault.status, {**headers, "x-amzn-errortype": kind}, {"message": fault.message}
    if api == "anthropic.messages":
        kind = _ANTHROPIC_ERROR_TYPES.get(fault.status, "api_error")
        return fault.status, headers, {"type": "error", "error": {"type": kind, "message": fault.message}}
    kind = _OPENAI_ERROR_TYPES.get(fault.status, "server_error")
    error = {"message": fault.message, "type": kind, "param": None, "code": kind}
    return fault.status, headers, {"error": error}


def _no_route(path: str) -> dict[str, Any]:
    return {"error": {"message": f"no route {path}", "type": "not_found_error"}}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The listen backlog: the default 5 refuses connections when a load test's threads all connect at
    # once (each request is a connection of its own), and the clients see APIConnectionError.
    request_queue_size = 1024

    def __init__(self, fake: FakeProvider) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "papayya-fake-provider/1"

    def do_GET(self) -> None:
        if not self._batch_route("GET", b""):
            self._send(404, {}, _no_route(self.path))

    def do_DELETE(self) -> None:
        if not self._batch_route("DELETE", b""):
            self._send(404, {}, _no_route(self.path))

    def _batch_route(self, method: str, raw: bytes) -> bool:
        """Answer a request to the batch APIs (``papayya.fake_batches``); False for any other path."""
        headers = {k.lower(): v for k, v in self.headers.items()}
        fake = self.server.fake
        answer = fake._batch_store.handle(method, self.path, headers, raw, fake.url)
        if answer is not None:
            self._send(*answer)
        return answer is not None

    def do_POST(self) -> None:
        fake = self.server.fake
        path = self.path.split("?", 1)[0]
        api = _ROUTES.get(path)
        model = None
        bedrock = _BEDROCK_ROUTE.fullmatch(path)
        if bedrock is not None:
            api, model = _BEDROCK_OPS[bedrock["op"]], unquote(bedrock["model"])
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        if api is None and self._batch_route("POST", raw):
            return
        if api is None:
            self._send(404, {}, _no_route(self.path))
            return
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self._send(*_error(api, Fault(400, message="the body is not a JSON object")))
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            answer = fake._answer(api, body, headers, model)
        except Exception as exc:  # a broken ``when`` predicate: answer, do not drop the connection
            answer = _error(api, Fault(500, message=f"the fake provider failed: {exc!r}"))
        self._send(*answer)

    def _send(self, status: int, headers: dict[str, str], payload: Any) -> None:
        if isinstance(payload, _Binary):
            data, kind = payload.data, payload.content_type
        elif isinstance(payload, bytes):  # the batch APIs' files and results, their type in ``headers``
            data, kind = payload, headers.pop("content-type")
        elif isinstance(payload, _Events):
            data, kind = payload.encode(), "text/event-stream"
        else:
            data, kind = json.dumps(payload).encode(), "application/json"
        self.send_response(status)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a test's output is not the place for an access log."""
