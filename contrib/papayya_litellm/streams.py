"""LiteLLM streams inside an attempt: the live one recorded as it is read, a journaled one read back.

A live ``CustomStreamWrapper`` keeps its class (a papayya subclass of LiteLLM's, so ``isinstance``
holds) and papayya's ``_Tap`` sees each chunk as the caller reads it: when the stream ends its chunks
go to ``run.llm``'s settlement (ledger row, journal), as for the raw clients' streams. A journaled
stream comes back as ``JournaledStream``, which yields the recorded chunks as LiteLLM's
``ModelResponseStream`` objects without a request.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import litellm

from papayya.errors import JournalMiss
from papayya.instrument import _Tap, _usage_only
from papayya.ledger import STREAM_EVENTS

_tapped_classes: dict[type, type] = {}


def _tapped_class(cls: type) -> type:
    """A direct subclass of LiteLLM's stream class that shows each chunk to the instance's tap."""
    tapped = _tapped_classes.get(cls)
    if tapped is not None:
        return tapped

    def __next__(self: Any) -> Any:
        tap: _Tap = self._papayya_tap
        while True:
            try:
                chunk = cls.__next__(self)  # type: ignore[attr-defined]
            except BaseException:  # StopIteration at its end, or a failure: over either way
                tap.settle()
                raise
            if tap.see(chunk):
                return chunk

    async def __anext__(self: Any) -> Any:
        tap: _Tap = self._papayya_tap
        while True:
            try:
                chunk = await cls.__anext__(self)  # type: ignore[attr-defined]
            except BaseException:
                await tap.asettle()
                raise
            if tap.see(chunk):
                return chunk

    def close(self: Any) -> None:
        try:
            cls.close(self)  # type: ignore[attr-defined]
        finally:
            self._papayya_tap.settle()

    async def aclose(self: Any) -> None:
        try:
            await cls.aclose(self)  # type: ignore[attr-defined]
        finally:
            await self._papayya_tap.asettle()

    namespace = {
        "__module__": cls.__module__,
        "__qualname__": cls.__qualname__,
        "__next__": __next__,
        "__anext__": __anext__,
        "close": close,
        "aclose": aclose,
    }
    tapped = type(cls.__name__, (cls,), namespace)
    _tapped_classes[cls] = tapped
    return tapped


def tap(stream: Any, settle: Callable[[Any], None], *, hide: bool) -> Any:
    """``stream``, LiteLLM's live stream, made to record its chunks and settle once when it ends.

    A stream the caller closes (``with``/``async with`` closes it) or stops reading is settled then,
    or when Python frees it, on the usage reported so far or its reservation
    (``ledger.abandoned_usage``).
    """
    recorder = _Tap(settle, hide=hide)
    stream.__class__ = _tapped_class(type(stream))
    stream._papayya_tap = recorder
    weakref.finalize(stream, recorder.dropped).atexit = False
    return stream


class JournaledStream:
    """A stream answered from the journal: the recorded chunks, as LiteLLM's ``ModelResponseStream``.

    Iterate it with ``for`` (a ``completion`` stream) or ``async for`` (an ``acompletion`` stream),
    as the live stream it replaces.
    """

    def __init__(self, events: list[Any], *, hide: bool) -> None:
        self._chunks = iter(
            [
                litellm.ModelResponseStream(**e)
                for e in events
                if isinstance(e, dict) and not (hide and _usage_only(e))
            ]
        )

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        return next(self._chunks)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        try:
            return next(self._chunks)
        except StopIteration:
            raise StopAsyncIteration from None


def replay(call: str, recorded: Any, *, hide: bool) -> JournaledStream:
    """A journaled stream for the caller, or ``JournalMiss`` when the journal holds an unstreamed answer."""
    events = recorded.get(STREAM_EVENTS) if isinstance(recorded, dict) else None
    if not isinstance(events, list):
        raise JournalMiss(
            f"The journal holds an answer to {call} that was not streamed, and this call streams; "
            "replay without --from-journal to call the provider."
        )
    return JournaledStream(events, hide=hide)
