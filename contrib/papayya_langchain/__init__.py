"""papayya_langchain: every LangChain and LangGraph model call an agent makes is gated, priced,
attributed and journaled.

::

    from langchain_openai import ChatOpenAI
    import papayya_langchain
    from papayya import agent

    papayya_langchain.install()          # the handler on every LangChain run, papayya's cache
    model = ChatOpenAI(model="gpt-4o-mini")

    @agent(retries=2)
    def summarize(item):
        return {"summary": model.invoke(item.input["text"]).content}

Inside an attempt, each chat model or LLM run is one LLM step of the item: the budget gate reserves
its worst-case cost when LangChain starts it (``papayya.Paused`` stops it before any request when a
budget has no room), its usage, model, provider (LangChain's ``ls_provider``, mapped to papayya's
names) and stop reason go to the ledger when it ends, priced like the raw clients' calls, and its
generations go to the journal. A retry, a resume or a from-journal replay gets the journaled answer
back through ``PapayyaCache`` and pays nothing. A ``length`` or ``max_tokens`` stop degrades the item,
on the paid attempt and on the replayed ones. LangGraph runs are covered the same way: a node that
calls a chat model is a LangChain run under the graph's callbacks.

Attach ``PapayyaCallbackHandler`` per call (``config={"callbacks": [PapayyaCallbackHandler()]}``) or
to the model (``callbacks=[...]``), and give the model ``cache=PapayyaCache()``, or let ``install()``
do both for every run of the process. A call is recorded once however many handlers see it.

``model.stream()`` and ``astream()`` ask no cache: papayya wraps the model class's stream generator,
so a retry gets the journaled answer as one chunk, for nothing. Not replayed (recorded and gated, but
a retry calls the provider again): completion LLMs (``BaseLLM``), which ask their cache before their
run starts.

Do not also instrument the OpenAI or Anthropic client under a LangChain model with
``papayya_openai``/``papayya_anthropic``: LangChain calls it through ``with_raw_response``, which
those leave unrecorded, and the handler records the call.
"""

from __future__ import annotations

try:
    import langchain_core  # noqa: F401
except ImportError as exc:
    raise ImportError(
        "papayya_langchain needs langchain-core; install it with pip install 'papayya[langchain]'."
    ) from exc

from contextvars import ContextVar

from langchain_core.globals import get_llm_cache, set_llm_cache
from langchain_core.tracers.context import register_configure_hook

from papayya_langchain.cache import PapayyaCache
from papayya_langchain.handler import STEP_METADATA, PapayyaCallbackHandler

__all__ = ["STEP_METADATA", "PapayyaCache", "PapayyaCallbackHandler", "install"]

_installed: PapayyaCallbackHandler | None = None


def install() -> PapayyaCallbackHandler:
    """Account for every LangChain run of this process: ``PapayyaCallbackHandler`` is attached to
    each run (in every thread and task, as LangSmith's tracer is) and ``PapayyaCache`` becomes the
    global LLM cache, keeping the cache set before it for calls outside papayya attempts. A model
    given its own ``cache=`` does not ask the global one: give it ``PapayyaCache(inner=...)``.
    Calling it again changes nothing. Returns the handler.
    """
    global _installed
    if _installed is None:
        _installed = PapayyaCallbackHandler()
        register_configure_hook(ContextVar("papayya_langchain_handler", default=_installed), inheritable=True)
    previous = get_llm_cache()
    if not isinstance(previous, PapayyaCache):
        set_llm_cache(PapayyaCache(inner=previous))
    return _installed
