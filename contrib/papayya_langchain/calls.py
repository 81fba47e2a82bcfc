"""The LangChain model calls in flight inside papayya attempts, and what their results say.

The callback handler opens a call when LangChain starts a model run and closes it when the run ends
or fails; the cache answers the calls the journal holds. Both find a call here by LangChain's run id
(the handler) or by its prompt (the cache). The registry is shared by every handler instance, so a
call is recorded once even when two handlers see it.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from langchain_core.load import dumps
from langchain_core.messages import BaseMessage, message_to_dict, messages_from_dict
from langchain_core.outputs import ChatGeneration, Generation, LLMResult
from pydantic_core import to_jsonable_python

from papayya import ledger
from papayya.context import AttemptContext, PaidCall
from papayya.pricing import Usage

# LangChain's ``ls_provider`` -> the provider id papayya prices under (genai-prices); others as given.
PROVIDERS = {
    "openai": "openai",
    "azure": "azure",
    "azure_openai": "azure",
    "anthropic": "anthropic",
    "google_genai": "google",
    "google_vertexai": "google",
    "google_anthropic_vertex": "anthropic",
    "bedrock": "bedrock",  # papayya's name for Bedrock, priced at the catalog's aws prices
    "amazon_bedrock": "bedrock",
    "bedrock_converse": "bedrock",
    "mistral": "mistral",
    "mistralai": "mistral",
    "groq": "groq",
    "deepseek": "deepseek",
    "xai": "x-ai",
    "cohere": "cohere",
    "together": "together",
    "fireworks": "fireworks",
    "perplexity": "perplexity",
    "openrouter": "openrouter",
}

_UNHASHED = frozenset({"stream", "_type", "stream_options", "stream_usage"})  # how, not what, is asked


@dataclass(eq=False)
class Call:
    """One model run of LangChain inside an attempt, from its start event to its end.

    Attributes:
        paid: How it is paid for; None while it is to be answered from the journal.
        recorded: The journal's answer (when ``paid`` is None).
        prompt: The messages as LangChain's cache sees them (``dumps``), to find the call there.
        served: The cache answered it from the journal; the provider was not called.
    """

    ctx: AttemptContext
    key: str
    provider: str
    model: str
    digest: str
    started: float = 0.0
    prompt: str | None = None
    paid: PaidCall | None = None
    recorded: Any = None
    served: bool = False
    looked_up: bool = False


_calls: dict[UUID, Call | None] = {}  # None: claimed by a handler that is still opening it
_lock = threading.Lock()


def claim(run_id: UUID) -> bool:
    """True for the first handler to see ``run_id``: that one opens and closes the call."""
    with _lock:
        if run_id in _calls:
            return False
        _calls[run_id] = None
        return True


def opened(run_id: UUID, call: Call | None) -> None:
    """The claimed run is ``call`` (None: nothing to record, e.g. the gate refused it)."""
    with _lock:
        if call is None:
            _calls.pop(run_id, None)
        else:
            _calls[run_id] = call


def close(run_id: UUID) -> Call | None:
    with _lock:
        return _calls.pop(run_id, None)


def answer(ctx: AttemptContext, prompt: str) -> Any:
    """The journal's answer for the open call of ``ctx`` with this prompt, or None to call the model.

    The call is found by its prompt; when no open call has it (LangChain reformatted the messages for
    its callbacks, e.g. image blocks), by being the only open call of the attempt not yet looked up.
    """
    with _lock:
        mine = [c for c in _calls.values() if c is not None and c.ctx is ctx and not c.looked_up]
        call = next((c for c in mine if c.prompt == prompt), None)
        if call is None and len(mine) == 1:
            call = mine[0]
        if call is None:
            return None
        call.looked_up = True
        if call.paid is not None:
            return None
        call.served = True
        return call.recorded


# -- requests -------------------------------------------------------------------------------------


def cache_prompt(messages: Sequence[BaseMessage]) -> str:
    """The prompt string LangChain's chat models give their cache for these messages (ids left out)."""
    return dumps([m.model_copy(update={"id": None}) if m.id is not None else m for m in messages])


def request_of(messages: Sequence[BaseMessage] | None, prompts: Sequence[str] | None) -> dict[str, Any]:
    """What a model run asks, as papayya estimates and hashes a request: its messages without the ids
    and metadata LangChain adds along the way (a replayed answer carries other metadata)."""
    if prompts is not None:
        return {"prompt": list(prompts)}
    out = []
    for m in messages or ():
        entry: dict[str, Any] = {"role": m.type, "content": m.content}
        for field in ("name", "tool_calls", "tool_call_id"):
            value = getattr(m, field, None)
            if value:
                entry[field] = value
        out.append(entry)
    return {"messages": out}


def request_hash(provider: str, model: str, request: dict[str, Any], params: Mapping[str, Any]) -> str:
    """A digest of the question: provider, model, messages and the invocation parameters that shape
    the answer (values JSON cannot hold count by their type, so an object's address never moves it)."""
    shown = {k: v for k, v in params.items() if k not in _UNHASHED}
    payload = [provider, model, request, shown]
    text = json.dumps(
        to_jsonable_python(payload, fallback=lambda o: type(o).__qualname__),
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


# -- results --------------------------------------------------------------------------------------


def _first(response: LLMResult) -> Generation | None:
    return response.generations[0][0] if response.generations and response.generations[0] else None


def outcome(provider: str, response: LLMResult) -> tuple[str | None, Usage, str | None]:
    """(model, usage, stop reason) of a finished run: the message's ``usage_metadata`` (input tokens
    there include cached ones, as papayya counts them), else the provider's usage in ``llm_output``."""
    gen = _first(response)
    message = getattr(gen, "message", None)
    meta: dict[str, Any] = dict(getattr(message, "response_metadata", None) or {})
    info: dict[str, Any] = dict((gen.generation_info if gen is not None else None) or {})
    output: dict[str, Any] = dict(response.llm_output or {})
    model = meta.get("model_name") or meta.get("model") or output.get("model_name") or output.get("model")
    stop = next(
        (s for s in (meta.get("finish_reason"), meta.get("stop_reason"), info.get("finish_reason"),
                     info.get("stop_reason")) if s),
        None,
    )  # fmt: skip
    usage_metadata = getattr(message, "usage_metadata", None)
    if usage_metadata:
        details = usage_metadata.get("input_token_details") or {}
        usage = Usage(
            input_tokens=int(usage_metadata.get("input_tokens") or 0),
            output_tokens=int(usage_metadata.get("output_tokens") or 0),
            cache_read_tokens=int(details.get("cache_read") or 0),
            cache_write_tokens=int(details.get("cache_creation") or 0),
        )
    else:
        raw = output.get("token_usage") or output.get("usage") or meta.get("token_usage") or meta.get("usage")
        _, usage, _ = ledger.extract_usage(provider, {"usage": raw} if isinstance(raw, dict) else {})
    return (str(model) if model else None), usage, (str(stop) if stop else None)


def encode(response: LLMResult, model: str | None, stop: str | None) -> dict[str, Any]:
    """A run's generations as the journal keeps them (JSON), with the model and stop reason."""
    generations = []
    for gen in response.generations[0] if response.generations else []:
        entry: dict[str, Any] = {"text": gen.text, "generation_info": gen.generation_info}
        message = getattr(gen, "message", None)
        if isinstance(message, BaseMessage):
            entry["message"] = message_to_dict(message)
        generations.append(entry)
    encoded: dict[str, Any] = to_jsonable_python(
        {"generations": generations, "model": model, "stop_reason": stop}, fallback=repr
    )
    return encoded


def decode(recorded: Any) -> list[Generation]:
    """The journaled generations as LangChain's cache returns them."""
    out: list[Generation] = []
    for entry in recorded.get("generations") or []:
        if "message" in entry:
            (message,) = messages_from_dict([entry["message"]])
            out.append(ChatGeneration(message=message, generation_info=entry.get("generation_info")))
        else:
            out.append(Generation(text=entry.get("text", ""), generation_info=entry.get("generation_info")))
    return out
