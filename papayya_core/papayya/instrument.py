"""Recording an LLM SDK client's calls through ``run.llm``, for any provider's contrib package.

A contrib package (``papayya_openai``, ``papayya_anthropic``) names the methods to record, one
``Target`` each, and hands its client to ``instrument_client``; everything else lives here, once::

    TARGETS = (Target("messages", step="anthropic.messages", decode=..., events=RawMessageStreamEvent),)
    STREAMS = Streams(anthropic.Stream, anthropic.AsyncStream, httpx2.Response, httpx2.Request)

    def instrument(client):
        return instrument_client(client, TARGETS, provider="anthropic", is_async=..., log=log,
                                 streams=STREAMS)

Each target's ``create`` is replaced, on that client object only, by a wrapper that, inside an
attempt, calls ``run.llm(step, provider=..., decode=...)`` with an ``Idempotency-Key`` header stable
across retries of the step (unless the caller set one). Outside an attempt the original runs as is.
Calls through the SDK's ``with_raw_response`` / ``with_streaming_response`` wrappers run unrecorded
with a warning logged once per logger. The client's ``copy()`` and ``with_options()`` instrument the
copies they make. This module imports no SDK: it relies only on the shape the Stainless-generated
OpenAI and Anthropic SDKs share (resources as attributes, ``extra_headers``, ``copy``/``with_options``,
``Stream``/``AsyncStream`` over an HTTP response).

**Streams** (``create(stream=True)``, and the SDK helpers that call it, such as OpenAI's
``chat.completions.stream`` and ``responses.stream``): the budget gate reserves before the stream
opens, as for any call. The caller gets the SDK's own stream object (its class is a papayya subclass
of the SDK's, so ``isinstance`` holds) whose events papayya reads as they pass: the ledger row is
written once, when the stream ends or is closed, with the usage of its last events. For OpenAI chat,
``stream_options={"include_usage": True}`` is added when the caller did not ask for it, and the extra
usage-only chunk (empty ``choices``) is kept from the caller. A stream that reached its end is
journaled as its events; a retry, resume or from-journal replay gets them back through the SDK's
stream class (fed from the journal, no request, nothing paid), and its stop reason degrades the item
as on the paid attempt. A stream that stops short (the caller stops iterating, closes it or drops
it, or the connection fails) is settled on the usage the provider had reported by then, else on its
reservation, with ``stop_reason`` ``abandoned:reported_usage`` or ``abandoned:reservation``; it is not
journaled, so a retry asks again. When the caller closes a chat stream after its ``finish_reason``,
the few bytes left (the usage chunk) are read first, so the call is settled in full. Leaving a
``for`` loop closes the stream; an ``async for`` left early is closed when the event loop finalizes
it, so close async streams (``async with``) to settle them at once. A stream neither read to its end
nor closed is settled when Python frees it.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic_core import to_jsonable_python

from papayya.context import BatchEndpoint, run
from papayya.errors import JournalMiss, StreamingNotSupported
from papayya.ledger import STREAM_EVENTS, fold_stream

__all__ = ["StreamingNotSupported", "Streams", "Target", "instrument_client", "uninstrument_client"]

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
        events: The SDK's type of one stream event (``ChatCompletionChunk``), to rebuild a journaled
            stream; None for a method that does not stream (``stream=True`` raises
            ``StreamingNotSupported`` inside an attempt).
        usage_option: The provider sends a stream's usage only when asked with
            ``stream_options={"include_usage": True}`` (OpenAI chat completions).
        done: The provider ends a stream with ``data: [DONE]``.
        helpers: Other methods of the resource that send the same request without calling
            ``create`` (Anthropic's ``messages.stream()``), each as (name, factory): the factory
            gets the resource (its ``create`` already recorded) and the original method, and
            returns the replacement, which inside an attempt goes through ``create``.
    """

    path: str
    step: str
    decode: Callable[[Any], Any]
    max_output_tokens: int | None = None
    events: Any = None
    usage_option: bool = False
    done: bool = False
    helpers: tuple[tuple[str, Callable[[Any, Callable[..., Any]], Callable[..., Any]]], ...] = ()

    @property
    def call(self) -> str:
        """The method as a user writes it, for messages: ``client.chat.completions.create``."""
        return f"client.{self.path}.create"


@dataclass(frozen=True)
class Streams:
    """How an SDK streams, to rebuild a journaled stream as the SDK's own object.

    Attributes:
        sync: The SDK's ``Stream`` class.
        async_: The SDK's ``AsyncStream`` class.
        response: The HTTP response class its streams read (``httpx2.Response``).
        request: The HTTP request class (``httpx2.Request``).
    """

    sync: type
    async_: type
    response: Callable[..., Any]
    request: Callable[..., Any]


def instrument_client(
    client: C,
    targets: Sequence[Target],
    *,
    provider: str,
    is_async: bool,
    log: logging.Logger,
    streams: Streams | None = None,
) -> C:
    """Record ``targets`` of ``client`` when called inside an attempt; returns the same client.

    Instrumenting twice is harmless. The caller checks that ``client`` is its SDK's client.

    Args:
        client: An SDK client; its resources are changed in place.
        targets: The methods to record.
        provider: The provider name the ledger prices calls under (``genai-prices`` provider id).
        is_async: The client's methods are coroutine functions.
        log: Where the one-time warning about unrecorded raw-response calls goes.
        streams: The SDK's stream classes, to record streamed calls of targets with ``events``; None:
            ``stream=True`` raises ``StreamingNotSupported`` inside an attempt.
    """
    wrap = _wrap_async if is_async else _wrap_sync
    for target in targets:
        resource = _resolve(client, target.path)
        if resource is None or hasattr(resource.create, _ORIGINAL):
            continue
        vars(resource)["create"] = wrap(resource.create, target, provider=provider, log=log, streams=streams)
        for name, factory in target.helpers:
            original = getattr(resource, name, None)
            if original is not None:
                helper = factory(resource, original)
                setattr(helper, _ORIGINAL, original)
                vars(resource)[name] = helper

    def again(copy: Any) -> Any:
        return instrument_client(
            copy, targets, provider=provider, is_async=is_async, log=log, streams=streams
        )

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
            for name, _ in target.helpers:
                if hasattr(vars(resource).get(name), _ORIGINAL):
                    del vars(resource)[name]
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
    """True when this call should go through ``run.llm``."""
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
    return True


def _with_key(kwargs: dict[str, Any], step: str) -> dict[str, Any]:
    """``kwargs`` with papayya's idempotency key as a header, unless the caller set one."""
    headers = dict(kwargs.get("extra_headers") or {})
    if not any(str(h).lower() == "idempotency-key" for h in headers):
        headers["Idempotency-Key"] = run.idempotency_key(step)
    return {**kwargs, "extra_headers": headers}


def _llm(
    original: Callable[..., Any],
    target: Target,
    kwargs: dict[str, Any],
    *,
    provider: str,
    streams: Streams | None,
    is_async: bool,
) -> tuple[Callable[..., Any], dict[str, Any]]:
    """``run.llm`` for this call of ``target``, and the keyword arguments to call it with."""
    if not kwargs.get("stream"):
        llm = run.llm(
            target.step,
            provider=provider,
            decode=target.decode,
            max_tokens=target.max_output_tokens,
            batch=_batch_endpoint(original, target),
        )
        return llm, _with_key(kwargs, target.step)
    if target.events is None or streams is None:
        raise StreamingNotSupported(
            f"{target.call}(stream=True) is not supported inside a papayya agent: papayya cannot "
            "journal or price this stream; call it without stream=True."
        )
    hide = False
    if target.usage_option:
        kwargs, hide = _with_usage(kwargs)
    client = getattr(original, "__self__", None)
    client = getattr(client, "_client", client)
    llm = run.llm(
        target.step,
        provider=provider,
        decode=functools.partial(_replay, streams, target, client, hide=hide, is_async=is_async),
        max_tokens=target.max_output_tokens,
        stream=functools.partial(_tap, hide=hide, is_async=is_async),
    )
    return llm, _with_key(kwargs, target.step)


def _batch_endpoint(original: Callable[..., Any], target: Target) -> BatchEndpoint | None:
    """Where a provider batch can carry this method's calls (batch mode), or None if none can."""
    from papayya.batch_api import ENDPOINTS

    found = ENDPOINTS.get(target.step)
    if found is None:
        return None
    client = getattr(original, "__self__", None)
    client = getattr(client, "_client", client)
    return BatchEndpoint(found[1], str(getattr(client, "base_url", "") or ""))


def _with_usage(kwargs: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """``kwargs`` asking for the stream's usage, and whether papayya asked (so hides the usage chunk)."""
    options = kwargs.get("stream_options")
    options = dict(options) if isinstance(options, Mapping) else {}
    if options.get("include_usage") is True:
        return kwargs, False
    return {**kwargs, "stream_options": {**options, "include_usage": True}}, True


def _wrap_sync(
    original: Callable[..., Any],
    target: Target,
    *,
    provider: str,
    log: logging.Logger,
    streams: Streams | None,
) -> Callable[..., Any]:
    @functools.wraps(original)
    def create(*args: Any, **kwargs: Any) -> Any:
        if not _recordable(kwargs, target, log):
            return original(*args, **kwargs)
        llm, kwargs = _llm(original, target, kwargs, provider=provider, streams=streams, is_async=False)
        return llm(original, *args, **kwargs)

    setattr(create, _ORIGINAL, original)
    return create


def _wrap_async(
    original: Callable[..., Any],
    target: Target,
    *,
    provider: str,
    log: logging.Logger,
    streams: Streams | None,
) -> Callable[..., Any]:
    @functools.wraps(original)
    async def create(*args: Any, **kwargs: Any) -> Any:
        if not _recordable(kwargs, target, log):
            return await original(*args, **kwargs)
        llm, kwargs = _llm(original, target, kwargs, provider=provider, streams=streams, is_async=True)
        return await llm(original, *args, **kwargs)

    setattr(create, _ORIGINAL, original)
    return create


def _wrap_copy(original: Callable[..., Any], again: Callable[[Any], Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def copy(*args: Any, **kwargs: Any) -> Any:
        return again(original(*args, **kwargs))

    setattr(copy, _ORIGINAL, original)
    return copy


# -- streams --------------------------------------------------------------------------------------

_DRAIN_LIMIT = 64  # events read after a chat stream's finish_reason to reach its usage, at most
log = logging.getLogger("papayya.instrument")


def _event_json(event: Any) -> Any:
    """An SDK stream event as the JSON the provider sent (fields it did not send left out)."""
    to_dict = getattr(event, "to_dict", None)
    if callable(to_dict):
        return to_dict(mode="json")
    return to_jsonable_python(event, fallback=repr)


def _usage_only(data: Any) -> bool:
    """The chunk OpenAI adds under ``stream_options.include_usage``: empty ``choices``, the usage."""
    return (
        isinstance(data, dict)
        and data.get("object") == "chat.completion.chunk"
        and not data.get("choices")
        and bool(data.get("usage"))
    )


class _Tap:
    """What papayya keeps of one live stream: its events, and the one settlement of its ledger row."""

    def __init__(self, settle: Callable[[Any], None], *, hide: bool) -> None:
        self._settle = settle
        self._lock = threading.Lock()
        self.hide = hide
        self.events: list[Any] = []
        self.settled = False
        self.draining = False

    def see(self, event: Any) -> bool:
        """Keep ``event``; True when the caller is to see it."""
        data = _event_json(event)
        self.events.append(data)
        return not (self.hide and _usage_only(data))

    def wants_rest(self) -> bool:
        """The provider has finished its answer (a stop reason came) but not yet sent its usage."""
        folded = fold_stream(self.events)
        return folded["stop_reason"] is not None and not folded["usage"]

    def _claim(self) -> dict[str, Any] | None:
        with self._lock:
            if self.settled:
                return None
            self.settled = True
            return {STREAM_EVENTS: list(self.events)}

    def settle(self) -> None:
        recorded = self._claim()
        if recorded is not None:
            self._settle(recorded)

    async def asettle(self) -> None:
        recorded = self._claim()
        if recorded is not None:
            await asyncio.to_thread(self._settle, recorded)

    def dropped(self) -> None:
        """The stream was garbage-collected before it ended or was closed."""
        try:
            self.settle()
        except Exception:  # in a finalizer: nobody to raise to
            log.exception("a dropped stream could not be settled in the ledger")


def _sync_methods(base: type) -> dict[str, Any]:
    """``__iter__`` and ``__next__`` of a live recorded stream, over those of the SDK's ``base``."""

    def __iter__(self: Any) -> Iterator[Any]:
        tap: _Tap = self._papayya_tap
        ended = False
        try:
            for event in base.__iter__(self):  # type: ignore[attr-defined]
                if tap.see(event):
                    yield event
            ended = True
        finally:
            if not ended:  # the caller left the loop, or the stream failed: it is over either way
                self.close()
            tap.settle()

    def __next__(self: Any) -> Any:
        tap: _Tap = self._papayya_tap
        while True:
            try:
                event = base.__next__(self)  # type: ignore[attr-defined]
            except BaseException:
                tap.settle()
                raise
            if tap.see(event):
                return event

    return {"__iter__": __iter__, "__next__": __next__}


def _async_methods(base: type) -> dict[str, Any]:
    """``__aiter__`` and ``__anext__`` of a live recorded stream, over those of the SDK's ``base``."""

    async def __aiter__(self: Any) -> AsyncIterator[Any]:
        tap: _Tap = self._papayya_tap
        ended = False
        try:
            async for event in base.__aiter__(self):  # type: ignore[attr-defined]
                if tap.see(event):
                    yield event
            ended = True
        finally:
            if not ended:
                await self.close()
            await tap.asettle()

    async def __anext__(self: Any) -> Any:
        tap: _Tap = self._papayya_tap
        while True:
            try:
                event = await base.__anext__(self)  # type: ignore[attr-defined]
            except BaseException:
                await tap.asettle()
                raise
            if tap.see(event):
                return event

    return {"__aiter__": __aiter__, "__anext__": __anext__}


_tapped_classes: dict[tuple[type, bool], type] = {}


def _tapped_class(cls: type, is_async: bool) -> type:
    """A subclass of the SDK's stream class that records; a direct one, so live instances can take it."""
    tapped = _tapped_classes.get((cls, is_async))
    if tapped is None:
        methods = _async_methods(cls) if is_async else _sync_methods(cls)
        namespace = {"__module__": cls.__module__, "__qualname__": cls.__qualname__, **methods}
        tapped = type(cls.__name__, (cls,), namespace)
        _tapped_classes[(cls, is_async)] = tapped
    return tapped


def _tap(stream: Any, settle: Callable[[Any], None], *, hide: bool, is_async: bool) -> Any:
    """``stream``, the SDK's live stream, made to record its events and settle once when it ends."""
    tap = _Tap(settle, hide=hide)
    stream.__class__ = _tapped_class(type(stream), is_async)
    stream._papayya_tap = tap
    # The SDK's own helpers (ChatCompletionStream, ResponseStream) close the HTTP response directly,
    # not the stream: settle there. A weak reference, so the response keeps no stream alive.
    response, ref = stream.response, weakref.ref(stream)
    if is_async:
        aclose = response.aclose

        async def closing() -> None:
            await _adrain(ref, tap)
            try:
                await aclose()
            finally:
                await tap.asettle()

        response.aclose = closing
    else:
        close = response.close

        def closing_sync() -> None:
            _drain(ref, tap)
            try:
                close()
            finally:
                tap.settle()

        response.close = closing_sync
    weakref.finalize(stream, tap.dropped).atexit = False
    return stream


def _drain(ref: weakref.ref[Any], tap: _Tap) -> None:
    """Before a stream closes: read what is left when it is only the usage (a chat finish came)."""
    stream = ref()
    if stream is None or tap.settled or tap.draining or not tap.wants_rest():
        return
    events = stream._iterator
    if getattr(events, "gi_running", False):
        return
    tap.draining = True
    try:
        for _ in range(_DRAIN_LIMIT):
            tap.see(next(events))
    except Exception:  # StopIteration, or a failure reading the rest: settled on what came
        pass
    finally:
        tap.draining = False


async def _adrain(ref: weakref.ref[Any], tap: _Tap) -> None:
    stream = ref()
    if stream is None or tap.settled or tap.draining or not tap.wants_rest():
        return
    events = stream._iterator
    if getattr(events, "ag_running", False):
        return
    tap.draining = True
    try:
        for _ in range(_DRAIN_LIMIT):
            tap.see(await events.__anext__())
    except Exception:  # StopAsyncIteration, or a failure reading the rest: settled on what came
        pass
    finally:
        tap.draining = False


def _replay(
    streams: Streams, target: Target, client: Any, recorded: Any, *, hide: bool, is_async: bool
) -> Any:
    """A journaled stream as the SDK's own stream object, reading the recorded events, not the network."""
    events = recorded.get(STREAM_EVENTS) if isinstance(recorded, dict) else None
    if not isinstance(events, list):
        raise JournalMiss(
            f"The journal holds an answer to {target.call} that was not streamed, and this call streams; "
            "replay without --from-journal to call the provider."
        )
    body = []
    for event in events:
        if hide and _usage_only(event):
            continue
        kind = event.get("type") if isinstance(event, dict) else None
        name = f"event: {kind}\n" if isinstance(kind, str) else ""
        body.append(f"{name}data: {json.dumps(event)}\n\n")
    if target.done:
        body.append("data: [DONE]\n\n")
    url = f"{str(getattr(client, 'base_url', 'http://journal.papayya.invalid/')).rstrip('/')}/{target.path}"
    response = streams.response(
        200,
        headers={"content-type": "text/event-stream"},
        content="".join(body).encode(),
        request=streams.request("POST", url),
    )
    cls = streams.async_ if is_async else streams.sync
    return cls(cast_to=target.events, response=response, client=client)
