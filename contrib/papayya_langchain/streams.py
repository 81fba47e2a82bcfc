"""Streamed chat model runs answered from papayya's journal.

LangChain's ``stream()`` and ``astream()`` never ask a cache: they start the run (the handler finds
the journal's answer then) and read the model's ``_stream``/``_astream`` generator. papayya wraps that
generator on the class that implements it, the first time a model of that class streams: inside an
attempt, when the journal holds the answer of the run just started and the model would have asked
``PapayyaCache``, the wrapper yields the journaled message as one chunk instead of calling the
provider; in every other case it is the model's own generator, untouched.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from langchain_core.caches import BaseCache
from langchain_core.globals import get_llm_cache
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, BaseMessageChunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk

from papayya.context import current
from papayya_langchain import calls

_ORIGINAL = "__papayya_original__"  # set on every wrapper, naming the function it replaced
_lock = threading.Lock()


def install() -> None:
    """Let streamed runs be answered from the journal. Idempotent; ``PapayyaCallbackHandler`` and
    ``PapayyaCache`` call it when they are made."""
    with _lock:
        for name in ("stream", "astream"):
            method = getattr(BaseChatModel, name)
            if not hasattr(method, _ORIGINAL):
                setattr(BaseChatModel, name, _wrap_entry(method))


def journal_answer(model: BaseChatModel, messages: Sequence[BaseMessage]) -> ChatGenerationChunk | None:
    """The journal's answer for the run ``model`` just started on ``messages``, as one stream chunk;
    None when the provider is to be called (outside an attempt, a run to pay for, or a model that
    would not ask papayya's cache)."""
    ctx = current.get()
    if ctx is None or not _asks_papayya(model):
        return None
    recorded = calls.answer(ctx, calls.cache_prompt(messages))
    if recorded is None:
        return None
    generations = calls.decode(recorded)
    if not generations or not isinstance(generations[0], ChatGeneration):
        return None
    first = generations[0]
    return ChatGenerationChunk(message=_as_chunk(first.message), generation_info=first.generation_info)


def _asks_papayya(model: BaseChatModel) -> bool:
    """The model's ``invoke`` would ask ``PapayyaCache`` (its own, else the global one)."""
    if model.cache is False:
        return False
    cache = model.cache if isinstance(model.cache, BaseCache) else get_llm_cache()
    from papayya_langchain.cache import PapayyaCache

    return isinstance(cache, PapayyaCache)


def _as_chunk(message: BaseMessage) -> BaseMessageChunk:
    """A journaled message (a whole one, or the merged chunks of a stream) as the last chunk of a
    stream, with its content, tool calls, usage and metadata."""
    if isinstance(message, AIMessageChunk):
        return message.model_copy(update={"chunk_position": "last"})
    if isinstance(message, AIMessage):
        return AIMessageChunk(
            content=message.content,
            additional_kwargs=message.additional_kwargs,
            response_metadata=message.response_metadata,
            usage_metadata=message.usage_metadata,
            id=message.id,
            name=message.name,
            tool_calls=message.tool_calls,
            invalid_tool_calls=message.invalid_tool_calls,
            chunk_position="last",
        )
    raise TypeError(f"a chat model's journaled answer is a {type(message).__name__}, not an AI message")


def _prepare(model: BaseChatModel) -> None:
    """Wrap the ``_stream``/``_astream`` of the class that implements them for ``model``, once."""
    for name, wrap in (("_stream", _wrap_generator), ("_astream", _wrap_agenerator)):
        owner = next((c for c in type(model).__mro__ if name in vars(c)), BaseChatModel)
        method = vars(owner)[name]
        if owner is BaseChatModel or hasattr(method, _ORIGINAL):
            continue  # not implemented (LangChain falls back to invoke, which asks the cache) or done
        with _lock:
            if not hasattr(vars(owner)[name], _ORIGINAL):
                setattr(owner, name, wrap(method))


def _wrap_entry(original: Callable[..., Any]) -> Callable[..., Any]:
    """``stream``/``astream``: prepare the model's class, then LangChain's own method, untouched."""

    @functools.wraps(original)
    def entry(self: BaseChatModel, *args: Any, **kwargs: Any) -> Any:
        if current.get() is not None:
            _prepare(self)
        return original(self, *args, **kwargs)

    setattr(entry, _ORIGINAL, original)
    return entry


def _wrap_generator(original: Callable[..., Iterator[ChatGenerationChunk]]) -> Callable[..., Any]:
    @functools.wraps(original)
    def _stream(
        self: BaseChatModel, messages: list[BaseMessage], *args: Any, **kwargs: Any
    ) -> Iterator[ChatGenerationChunk]:
        answer = journal_answer(self, messages)
        if answer is not None:
            yield answer
            return
        yield from original(self, messages, *args, **kwargs)

    setattr(_stream, _ORIGINAL, original)
    return _stream


def _wrap_agenerator(original: Callable[..., AsyncIterator[ChatGenerationChunk]]) -> Callable[..., Any]:
    @functools.wraps(original)
    async def _astream(
        self: BaseChatModel, messages: list[BaseMessage], *args: Any, **kwargs: Any
    ) -> AsyncIterator[ChatGenerationChunk]:
        answer = journal_answer(self, messages)
        if answer is not None:
            yield answer
            return
        async for chunk in original(self, messages, *args, **kwargs):
            yield chunk

    setattr(_astream, _ORIGINAL, original)
    return _astream
