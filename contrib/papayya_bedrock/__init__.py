"""papayya_bedrock: the AWS Bedrock calls an agent makes are journaled, priced and attributed.

::

    import boto3
    import papayya_bedrock
    from papayya import agent

    bedrock = papayya_bedrock.instrument(boto3.client("bedrock-runtime", region_name="us-east-1"))

    @agent(retries=2)
    def summarize(item):
        reply = bedrock.converse(
            modelId="amazon.nova-lite-v1:0",
            messages=[{"role": "user", "content": [{"text": item.input["text"]}]}],
            inferenceConfig={"maxTokens": 512},
        )
        return {"summary": reply["output"]["message"]["content"][0]["text"]}

Inside an attempt, ``bedrock.converse`` goes through ``run.llm`` (step ``bedrock.converse``, provider
``bedrock``, model the ``modelId`` asked for, since Converse does not report one): the budget gate
reserves the call's worst case (its ``inferenceConfig.maxTokens``, else
``PAPAYYA_DEFAULT_MAX_OUTPUT_TOKENS``) before the request leaves, the usage (cache reads and writes
included), stop reason and cost go to the ledger, priced at the public catalog's ``aws`` prices (a
model it does not know, or an answer without usage, is recorded with cost unknown, never 0), and the
response goes to the journal. A retried or resumed attempt gets the recorded response back, the same
dict boto3 returned (``ResponseMetadata`` included, ``bytes`` values restored), without calling
Bedrock again. A ``max_tokens``, ``content_filtered`` or ``guardrail_intervened`` stop degrades the
item. Throttling and 5xx errors are retried per the agent's policy; validation errors are not.

``converse_stream`` (step ``bedrock.converse_stream``) goes through the same ``run.llm``, as a stream:
the budget gate reserves before the stream opens, and the caller gets boto3's shape,
``{"stream": ..., "ResponseMetadata": ...}``, whose ``stream`` (papayya's iterable with ``close()``,
not botocore's ``EventStream``) yields boto3's event dicts while papayya keeps them. The call is
settled once: at the stream's end on the usage of its ``metadata`` event and the stop reason of its
``messageStop``, the events journaled, so a retry, resume or from-journal replay gets them back for
nothing and a ``max_tokens`` stop degrades it too; a stream that stops short (left, closed, dropped,
failed) on its reservation (Bedrock reports usage only at the end), ``stop_reason``
``abandoned:reservation``, not journaled. A stream closed after its ``messageStop`` reads its usage
first.

``invoke_model`` (step ``bedrock.invoke_model``) reads the answer's body for the Anthropic
(``anthropic.*``: ``usage``, ``stop_reason``), Meta Llama (``meta.llama*``: ``prompt_token_count``,
``generation_token_count``, ``stop_reason``) and Amazon Titan text (``amazon.titan-text*``:
``inputTextTokenCount``, ``results[].tokenCount``, ``completionReason``) families, reserving on the
family's output cap (``max_tokens``, ``max_gen_len``, ``textGenerationConfig.maxTokenCount``). The
body's bytes are journaled and the caller gets a fresh ``StreamingBody`` over them, live and on
replay. A body papayya cannot read (another family, not JSON) is recorded with cost unknown and the
reason as its stop reason (``unpriced:...``); the caller's answer is untouched.

Outside an attempt the client behaves exactly as before. Instrumenting twice is harmless, and
``uninstrument`` undoes it.

Not recorded:

- ``invoke_model_with_response_stream`` runs as before, unrecorded: inside an attempt the first such
  call of the process logs a warning on ``papayya.bedrock`` saying so (its cost is in no ledger or
  budget); call ``converse_stream`` or ``invoke_model``, or wrap the call in ``run.llm`` yourself.
- The async clients (``aioboto3``, ``aiobotocore``) are not instrumented.

boto3 cannot send papayya's ``Idempotency-Key`` header (Bedrock has no idempotency key), so a request
that reached Bedrock but whose answer was lost on the way back is paid again by the retry.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import logging
import re
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

try:
    import botocore.client
    from botocore.response import StreamingBody
except ImportError as exc:
    raise ImportError(
        "papayya_bedrock needs the boto3 package; install it with pip install 'papayya[bedrock]'."
    ) from exc

from papayya.context import run
from papayya.errors import JournalMiss
from papayya.instrument import _Tap
from papayya.ledger import STREAM_EVENTS, prompt_tokens, text_tokens

log = logging.getLogger("papayya.bedrock")

__all__ = ["instrument", "uninstrument"]

Client = TypeVar("Client")

STEP = "bedrock.converse"
STREAM_STEP = "bedrock.converse_stream"
INVOKE_STEP = "bedrock.invoke_model"
_ORIGINAL = "__papayya_original__"  # set on every wrapper, naming the method it replaced
_BYTES = "__papayya_bytes__"  # a bytes value in the journal: {_BYTES: base64}


def instrument(client: Client, *, provider: str = "bedrock") -> Client:
    """Record the client's ``converse``, ``converse_stream`` and ``invoke_model`` calls made inside
    papayya attempts; returns the same client.

    Args:
        client: A boto3 ``bedrock-runtime`` client. Instrumenting twice is harmless.
        provider: The provider name the ledger records and prices calls under (``bedrock`` is priced
            at the catalog's ``aws`` prices; tenant price overrides use this name).

    Raises:
        TypeError: ``client`` is not a boto3 ``bedrock-runtime`` client.
    """
    if _service(client) != "bedrock-runtime":
        raise TypeError(
            "papayya_bedrock.instrument() takes a boto3 client made with "
            f'boto3.client("bedrock-runtime"), not {_describe(client)}.'
        )
    wrappers = (
        ("converse", _wrap_converse),
        ("converse_stream", _wrap_stream),
        ("invoke_model", _wrap_invoke),
        ("invoke_model_with_response_stream", _wrap_unrecorded),
    )
    for name, wrap in wrappers:
        method = getattr(client, name)
        if not hasattr(method, _ORIGINAL):
            wrapper = wrap(method, provider)
            setattr(wrapper, _ORIGINAL, method)
            vars(client)[name] = wrapper
    return client


def uninstrument(client: Client) -> Client:
    """Undo ``instrument``: the client's calls are no longer recorded. Returns the same client."""
    for name in ("converse", "converse_stream", "invoke_model", "invoke_model_with_response_stream"):
        if hasattr(vars(client).get(name), _ORIGINAL):
            del vars(client)[name]
    return client


def _service(client: Any) -> str | None:
    if not isinstance(client, botocore.client.BaseClient):
        return None
    name = client.meta.service_model.service_name
    return name if isinstance(name, str) else None


def _describe(client: Any) -> str:
    service = _service(client)
    return f"a {service!r} client" if service else type(client).__name__


def _wrap_converse(original: Callable[..., Any], provider: str) -> Callable[..., Any]:
    def send(**request: Any) -> Any:
        # What run.llm hashes, reserves on and journals is JSON: bytes (images, documents) as base64.
        return _encode(original(**_decode(request)))

    @functools.wraps(original)
    def converse(*args: Any, **kwargs: Any) -> Any:
        if args or not run.active:
            return original(*args, **kwargs)  # boto3 takes keyword arguments only, and says so
        model = kwargs.get("modelId")
        config = kwargs.get("inferenceConfig")
        cap = config.get("maxTokens") if isinstance(config, Mapping) else None
        llm = run.llm(
            STEP,
            provider=provider,
            model=model if isinstance(model, str) and model else None,
            max_tokens=cap if isinstance(cap, int) and not isinstance(cap, bool) and cap >= 0 else None,
        )
        return _decode(llm(send, **_encode(kwargs)))

    return converse


def _wrap_stream(original: Callable[..., Any], provider: str) -> Callable[..., Any]:
    def send(**request: Any) -> Any:
        return original(**_decode(request))

    @functools.wraps(original)
    def converse_stream(*args: Any, **kwargs: Any) -> Any:
        if args or not run.active:
            return original(*args, **kwargs)
        model = kwargs.get("modelId")
        config = kwargs.get("inferenceConfig")
        llm = run.llm(
            STREAM_STEP,
            provider=provider,
            model=model if isinstance(model, str) and model else None,
            max_tokens=_count(config.get("maxTokens")) if isinstance(config, Mapping) else None,
            decode=_replayed_stream,
            stream=_live_stream,
        )
        return llm(send, **_encode(kwargs))

    return converse_stream


def _live_stream(response: Any, settle: Callable[[Any], None]) -> Any:
    """boto3's answer with its event stream read through papayya, which settles the call once."""
    metadata = _encode(response.get("ResponseMetadata") or {})
    tap = _Tap(lambda recorded: settle({**recorded, "ResponseMetadata": metadata}), hide=False)
    return {**response, "stream": _LiveStream(response["stream"], tap)}


def _replayed_stream(recorded: Any) -> Any:
    """A journaled ConverseStream answer as boto3 returned it, its events read from the journal."""
    events = recorded.get(STREAM_EVENTS) if isinstance(recorded, dict) else None
    if not isinstance(events, list):
        raise JournalMiss(
            "The journal holds an answer to client.converse_stream that is not a stream; replay "
            "without --from-journal to call Bedrock."
        )
    metadata = _decode(recorded.get("ResponseMetadata") or {})
    return {"ResponseMetadata": metadata, "stream": _ReplayedStream([_decode(e) for e in events])}


class _LiveStream:
    """A ConverseStream's events, as boto3's ``EventStream`` yields them, each kept for the ledger.

    The call is settled once: when the events end; when the caller leaves its ``for`` loop early or
    calls ``close()`` (after reading the usage when only that is left, so a stream closed after its
    ``messageStop`` is settled in full); or, for a stream never read to its end nor closed, when
    Python frees it.
    """

    def __init__(self, events: Any, tap: _Tap) -> None:
        self._events = events
        self._tap = tap
        weakref.finalize(self, _dropped, events, tap).atexit = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        ended = False
        try:
            for event in self._events:
                self._tap.see(_encode(event))
                yield event
            ended = True
        finally:
            if not ended:  # the caller left the loop, or the stream failed: it is over either way
                self.close()
            self._tap.settle()

    def close(self) -> None:
        """Close the connection; the call is settled on the events read so far."""
        tap = self._tap
        if not tap.settled and not tap.draining and tap.wants_rest():
            tap.draining = True
            try:
                for _, event in zip(range(_DRAIN_LIMIT), self._events, strict=False):
                    tap.see(_encode(event))
            except Exception:  # a failure reading the rest: settled on what came
                pass
            finally:
                tap.draining = False
        try:
            self._events.close()
        finally:
            tap.settle()


def _dropped(events: Any, tap: _Tap) -> None:
    """A live stream was freed before it ended or was closed."""
    try:
        events.close()
    finally:
        tap.dropped()


class _ReplayedStream:
    """A journaled ConverseStream's events, yielded as boto3 yielded them; nothing is paid."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self._events = iter(events)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self._events

    def close(self) -> None:
        """Nothing to close: the events come from the journal."""
        self._events = iter(())


_DRAIN_LIMIT = 16  # events read after a stream's messageStop to reach its usage, at most


def _wrap_invoke(original: Callable[..., Any], provider: str) -> Callable[..., Any]:
    def send(**request: Any) -> Any:
        response = original(**_decode(request))
        data = response["body"].read()
        read = _read_invoke(str(request.get("modelId") or ""), data)
        # The usage and stop reason read from the body go to the journal beside the response, in
        # Converse's spelling, the one the ledger reads; the caller never sees them.
        return _encode({**response, "body": data, _READ: read, **read})

    @functools.wraps(original)
    def invoke_model(*args: Any, **kwargs: Any) -> Any:
        if args or not run.active:
            return original(*args, **kwargs)
        body: Any = kwargs.get("body")
        if callable(getattr(body, "read", None)):  # a file: read once, so the journal keeps what was sent
            body = body.read()
            kwargs = {**kwargs, "body": body}
        model = kwargs.get("modelId")
        model = model if isinstance(model, str) and model else None
        text = body.decode("utf-8", "replace") if isinstance(body, bytes | bytearray) else body
        request = _json_object(text)
        family = _family(model or "")
        if family == "anthropic" and request is not None:  # a Messages body: images count as images
            prompt: int | None = prompt_tokens(request, model)
        else:  # the whole body as text: an over-estimate of a prompt it holds
            prompt = text_tokens(text) + 16 if isinstance(text, str) else None
        llm = run.llm(
            INVOKE_STEP,
            provider=provider,
            model=model,
            max_tokens=_invoke_cap(family, request),
            max_input_tokens=prompt,
        )
        return _invoke_response(llm(send, **_encode(kwargs)))

    return invoke_model


def _invoke_response(recorded: Any) -> Any:
    """An InvokeModel answer as boto3 returns it, its ``body`` a fresh stream over the recorded bytes."""
    response = _decode(recorded)
    for key in (_READ, *response.get(_READ, {})):
        response.pop(key, None)
    data = response.get("body", b"")
    data = data if isinstance(data, bytes) else str(data).encode()
    return {**response, "body": StreamingBody(io.BytesIO(data), len(data))}


# The model families whose InvokeModel body papayya reads, after a cross-region prefix (``us.``,
# ``global.``...) or an ARN's path.
_FAMILY = re.compile(r"(?:[a-z-]+\.)?(anthropic|meta\.llama|amazon\.titan-text)")
_READ = "__papayya_read__"  # in the journal: the keys papayya added to an InvokeModel answer


def _family(model: str) -> str | None:
    found = _FAMILY.match(model.rsplit("/", 1)[-1])
    return found[1] if found else None


def _json_object(text: Any) -> dict[str, Any] | None:
    if not isinstance(text, str):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _invoke_cap(family: str | None, request: dict[str, Any] | None) -> int | None:
    """The output tokens an InvokeModel request allows, in its model family's field; None: unknown."""
    if request is None:
        return None
    if family == "anthropic":
        return _count(request.get("max_tokens"))
    if family == "meta.llama":
        return _count(request.get("max_gen_len"))
    config = request.get("textGenerationConfig")
    if family == "amazon.titan-text" and isinstance(config, Mapping):
        return _count(config.get("maxTokenCount"))
    return None


def _read_invoke(model: str, data: bytes) -> dict[str, Any]:
    """The usage and stop reason of an InvokeModel answer's body, as a Converse answer spells them.

    A body papayya cannot read gets no ``usage`` (the call is priced as unknown) and the reason as its
    stop reason, ``unpriced:...``; a body of a known family that leaves out its token counts gets its
    own stop reason and no usage.
    """
    family = _family(model)
    if family is None:
        return {"stopReason": f"unpriced:papayya does not read {model or 'this model'}'s body"}
    body = _json_object(data.decode("utf-8", "replace"))
    if body is None:
        return {"stopReason": "unpriced:the body is not a JSON object"}
    if family == "anthropic":
        usage: dict[str, Any] = body["usage"] if isinstance(body.get("usage"), dict) else {}
        counts: dict[str, Any] = {
            "inputTokens": usage.get("input_tokens"),
            "outputTokens": usage.get("output_tokens"),
            "cacheReadInputTokens": usage.get("cache_read_input_tokens") or 0,
            "cacheWriteInputTokens": usage.get("cache_creation_input_tokens") or 0,
        }
        stop = body.get("stop_reason")
    elif family == "meta.llama":
        counts = {
            "inputTokens": body.get("prompt_token_count"),
            "outputTokens": body.get("generation_token_count"),
        }
        stop = body.get("stop_reason")
    else:
        results = [r for r in body.get("results") or [] if isinstance(r, dict)]
        outputs = [_count(r.get("tokenCount")) for r in results]
        output = sum(n for n in outputs if n is not None) if outputs and None not in outputs else None
        counts = {"inputTokens": body.get("inputTextTokenCount"), "outputTokens": output}
        stop = results[0].get("completionReason") if results else None
    read: dict[str, Any] = {"stopReason": stop if isinstance(stop, str) else None}
    if all(_count(n) is not None for n in counts.values()):
        read["usage"] = counts
    return read


def _wrap_unrecorded(original: Callable[..., Any], provider: str) -> Callable[..., Any]:
    """A method papayya does not record: it runs as before, and inside an attempt it says so once."""

    @functools.wraps(original)
    def unrecorded(*args: Any, **kwargs: Any) -> Any:
        if run.active and original.__name__ not in _warned:
            _warned.add(original.__name__)
            log.warning(
                "client.%s inside a papayya agent is not recorded: its cost is in no ledger or budget, "
                "and a retry pays for it again; call client.converse_stream or client.invoke_model, "
                "or wrap the call in run.llm.",
                original.__name__,
            )
        return original(*args, **kwargs)

    return unrecorded


_warned: set[str] = set()  # the unrecorded methods already warned about in this process


def _encode(value: Any) -> Any:
    """``value`` with every ``bytes`` replaced by ``{_BYTES: base64}``, so it is JSON."""
    if isinstance(value, bytes | bytearray):
        return {_BYTES: base64.b64encode(value).decode("ascii")}
    if isinstance(value, Mapping):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    """``_encode`` undone, on fresh containers (the caller may change what it gets)."""
    if isinstance(value, Mapping):
        if len(value) == 1 and isinstance(value.get(_BYTES), str):
            return base64.b64decode(value[_BYTES])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value
