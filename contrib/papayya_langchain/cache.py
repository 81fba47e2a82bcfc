"""``PapayyaCache``: LangChain's cache, answered from papayya's journal inside an attempt."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.caches import BaseCache
from langchain_core.outputs import Generation

from papayya.context import current
from papayya_langchain import calls, streams


class PapayyaCache(BaseCache):
    """A LangChain cache through which a retried, resumed or from-journal replayed attempt gets the
    answers its item's journal holds, without calling (or paying) the provider.

    Inside an attempt it answers only the chat model runs ``PapayyaCallbackHandler`` found in the
    journal when they started (the step key and request hash decide, as for ``run.llm``); every other
    run goes to the provider, and the handler journals its answer. ``update`` writes nothing there:
    the journal is written with the ledger row. Outside an attempt it is ``inner`` (or no cache).

    Args:
        inner: The cache to use outside papayya attempts (e.g. the one set before papayya's).
    """

    def __init__(self, inner: BaseCache | None = None) -> None:
        self.inner = inner
        streams.install()

    def lookup(self, prompt: str, llm_string: str) -> Sequence[Generation] | None:
        ctx = current.get()
        if ctx is None:
            return self.inner.lookup(prompt, llm_string) if self.inner is not None else None
        recorded = calls.answer(ctx, prompt)
        return calls.decode(recorded) if recorded is not None else None

    def update(self, prompt: str, llm_string: str, return_val: Sequence[Generation]) -> None:
        if current.get() is None and self.inner is not None:
            self.inner.update(prompt, llm_string, return_val)

    def clear(self, **kwargs: Any) -> None:
        if self.inner is not None:
            self.inner.clear(**kwargs)

    async def alookup(self, prompt: str, llm_string: str) -> Sequence[Generation] | None:
        if current.get() is None and self.inner is not None:
            return await self.inner.alookup(prompt, llm_string)
        return self.lookup(prompt, llm_string)  # the journal is in memory: nothing to wait for

    async def aupdate(self, prompt: str, llm_string: str, return_val: Sequence[Generation]) -> None:
        if current.get() is None and self.inner is not None:
            await self.inner.aupdate(prompt, llm_string, return_val)

    async def aclear(self, **kwargs: Any) -> None:
        if self.inner is not None:
            await self.inner.aclear(**kwargs)
