"""``PapayyaCallbackHandler``: LangChain model runs inside an attempt, gated, recorded and journaled."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult

from papayya import ledger
from papayya.context import PaidCall, current, replayed
from papayya.pricing import Usage
from papayya_langchain import calls, streams

log = logging.getLogger("papayya.langchain")

STEP_METADATA = "papayya_step"  # config={"metadata": {"papayya_step": "summary"}} names a call's step
_warned_unserved = False
_warned_usage = False


class PapayyaCallbackHandler(BaseCallbackHandler):
    """Accounts for every chat model and LLM run LangChain makes inside a papayya attempt.

    Outside an attempt it does nothing. Inside one, each model run is one LLM step of the item
    (``llm:<step>#n``, the step named by ``metadata["papayya_step"]``, else the run name, else the
    LangGraph node, else ``langchain.<provider>``):

    - when the run starts, a from-journal replay that has no answer for it stops with ``JournalMiss``;
      a step the journal answers reserves nothing (``PapayyaCache`` gives LangChain the answer);
      any other reserves its worst-case cost on the tenant's and the run's budgets, after the rate
      limit, and a budget with no room stops the call with ``papayya.Paused`` before any request;
    - when it ends, its usage (from the message's ``usage_metadata``, else the provider's usage in
      ``llm_output``), model, provider and stop reason go to the ledger, priced like the raw clients'
      calls (cost unknown, not 0, for a model without a price), and its generations to the journal,
      in one write; a ``length``/``max_tokens`` stop degrades the item, also when the journal answers;
    - when it fails, its reservation is released (a 429 closes the provider's rate-limit key); a
      stream that fails or is left after its first chunks is settled, not journaled, on the usage it
      reported, else on its reservation (``abandoned:reported_usage`` / ``abandoned:reservation``).

    ``raise_error`` is True so LangChain lets papayya's refusals through; ``Paused`` is a
    ``BaseException`` and would pass anyway. The handler keeps no state of its own: any number of
    instances may be attached, and each model run is still recorded once.
    """

    raise_error = True

    def __init__(self) -> None:
        streams.install()

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        (message_list,) = messages or [[]]  # one start event per message list, even in a batch
        self._start(run_id, metadata, kwargs, messages=message_list)

    def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._start(run_id, metadata, kwargs, prompts=prompts)

    def on_llm_end(
        self,
        response: LLMResult,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        call = calls.close(run_id)
        if call is None:
            return
        model, usage, stop = calls.outcome(call.provider, response)
        if call.paid is None and call.served:
            recorded = call.recorded or {}
            replayed(
                call.ctx,
                call.key,
                call.provider,
                recorded.get("model") or call.model,
                recorded.get("stop_reason"),
            )
            return
        paid = call.paid or _unreserved(call)
        if usage.input_tokens + usage.output_tokens == 0 and paid.worst.input_tokens:
            usage = _unreported(call, paid)
        journal = calls.encode(response, model, stop) if call.paid is not None else None
        paid.finish(model=model, usage=usage, stop_reason=stop, journal_result=journal)

    def on_llm_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        call = calls.close(run_id)
        if call is None or call.paid is None:
            return
        response = kwargs.get("response")
        # A stream that failed or was left after its first chunks: LangChain passes what came first.
        streamed = isinstance(response, LLMResult) and len(response.generations) == 2
        if not streamed:
            call.paid.failed(error)
            return
        assert isinstance(response, LLMResult)
        model, usage, _ = calls.outcome(call.provider, LLMResult(generations=response.generations[:1]))
        stop = ledger.ABANDONED_REPORTED
        if usage.input_tokens + usage.output_tokens == 0:
            usage, stop = call.paid.worst, ledger.ABANDONED_RESERVED
        call.paid.finish(model=model, usage=usage, stop_reason=stop)

    def _start(
        self,
        run_id: UUID,
        metadata: dict[str, Any] | None,
        kwargs: dict[str, Any],
        *,
        messages: Sequence[BaseMessage] | None = None,
        prompts: Sequence[str] | None = None,
    ) -> None:
        ctx = current.get()
        if ctx is None or not calls.claim(run_id):
            return
        call = None
        try:
            ctx.check_alive()
            meta = metadata or {}
            params: dict[str, Any] = dict(kwargs.get("invocation_params") or {})
            lc_provider = str(meta.get("ls_provider") or params.get("_type") or "langchain")
            provider = calls.PROVIDERS.get(lc_provider, lc_provider)
            model = str(
                meta.get("ls_model_name") or params.get("model") or params.get("model_name") or "unknown"
            )
            name = str(
                meta.get(STEP_METADATA)
                or kwargs.get("name")
                or meta.get("langgraph_node")
                or f"langchain.{provider}"
            )
            request = calls.request_of(messages, prompts)
            digest = calls.request_hash(provider, model, request, params)
            key = ctx.next_key("llm", name)
            call = calls.Call(ctx, key, provider, model, digest, started=time.perf_counter())
            if messages is not None:
                call.prompt = calls.cache_prompt(messages)
            found, recorded = ctx.recorded(key, digest)
            # A completion LLM asks its cache before it starts a run, so its answers are not replayed.
            if found and prompts is None and isinstance(recorded, dict):
                call.recorded = recorded
                return
            cap = params.get("max_tokens") or params.get("max_completion_tokens") or meta.get("ls_max_tokens")
            estimated = {**request, "tools": params.get("tools")} if params.get("tools") else request
            call.paid = PaidCall.plan(
                ctx,
                provider=provider,
                model=model,
                key=key,
                digest=digest,
                request=estimated,
                max_tokens=int(cap) if isinstance(cap, int) else None,
            )
            call.paid.reserve()
        except BaseException:
            call = None
            raise
        finally:
            calls.opened(run_id, call)


def _unreserved(call: calls.Call) -> PaidCall:
    """The journal held an answer, but no ``PapayyaCache`` gave it to LangChain: the model was called
    (and paid) again. Recorded as paid, without a reservation."""
    global _warned_unserved
    if not _warned_unserved:
        _warned_unserved = True
        log.warning(
            "step %s was answered by the provider although papayya's journal holds its answer: LangChain "
            "did not ask papayya's cache (call papayya_langchain.install(), or give the model "
            "cache=PapayyaCache(), not cache=False). The call is recorded as paid again.",
            call.key,
        )
    return PaidCall(
        call.ctx, call.provider, call.model, call.key, call.digest, Usage(), None, started=call.started
    )


def _unreported(call: calls.Call, paid: PaidCall) -> Usage:
    """The provider reported no usage (e.g. ChatOpenAI streaming without ``stream_usage=True``): the
    call is settled on the worst case its reservation assumed, never as free."""
    global _warned_usage
    if not _warned_usage:
        _warned_usage = True
        log.warning(
            "step %s: %s/%s reported no token usage, so papayya records the worst case it reserved; "
            "for a streamed ChatOpenAI call, set stream_usage=True.",
            call.key,
            call.provider,
            call.model,
        )
    return paid.worst
