"""papayya_litellm: every LiteLLM call an agent makes is gated, journaled, priced and attributed.

::

    import papayya_litellm  # before litellm: it keeps LiteLLM's price map local (no network at import)
    import litellm
    from papayya import agent

    papayya_litellm.instrument()

    @agent(retries=2)
    def summarize(item):
        reply = litellm.completion(model="openai/gpt-4o-mini", messages=[...])
        return {"summary": reply.choices[0].message.content}

Inside an attempt, ``litellm.completion``, ``litellm.acompletion``, ``litellm.embedding`` and
``litellm.aembedding`` go through ``run.llm``, whichever of LiteLLM's providers the model names: the
budget gate reserves the call's worst-case cost before anything is sent (a budget with no room
pauses the item there, ``papayya.Paused``, with no request sent), the provider's rate limits hold,
the call's usage, stop reason and cost go to the ledger (attributed to tenant, run, item and model,
under the provider LiteLLM routes it to: ``openai/gpt-4o-mini`` is ``openai`` / ``gpt-4o-mini``), and
its response goes to the journal. A retried or resumed attempt, or a from-journal replay, gets the
recorded response back as LiteLLM's ``ModelResponse`` (``EmbeddingResponse``) without calling the
provider or paying again, and with no LiteLLM callback run, as no call was made. A ``length`` or
``content_filter`` stop degrades the item on the paid attempt and on every replay alike. Each call
carries an ``Idempotency-Key`` header stable across retries of the step (``extra_headers``).

LiteLLM's callbacks observe calls but cannot refuse one, so papayya wraps the functions instead.

**Prices** come from papayya's catalog (``genai-prices``), or a tenant's override, as for the raw
clients. A model neither prices is priced by LiteLLM's own cost map when that knows it: the budget
gate reserves on LiteLLM's estimate and the ledger records LiteLLM's ``response_cost`` for the call,
with ``price_source`` ``litellm``. A model nobody prices is recorded with cost unknown (NULL, never
0). A journaled answer carries no ``response_cost``, and replays record nothing anyway.

**Streams**: ``completion(stream=True)`` / ``acompletion(stream=True)`` return LiteLLM's own stream
object (a papayya subclass of ``CustomStreamWrapper``). papayya asks for the usage
(``stream_options={"include_usage": True}``) when the caller did not, and keeps that extra usage-only
chunk (empty ``choices``) from the caller; the ledger row is written when the stream ends, from that
usage, and the chunks are journaled, so a retry reads them back (as ``ModelResponseStream`` chunks)
without a request. A stream closed or dropped midway is settled on its reservation
(``abandoned:reservation``) and not journaled.

Outside an attempt LiteLLM behaves exactly as before. ``instrument`` replaces the functions on the
``litellm`` module: call it before ``from litellm import completion`` binds the original, or call
``litellm.completion(...)``. ``uninstrument`` undoes it. Not recorded: ``litellm.text_completion``,
``litellm.responses``, the ``Router`` (its calls through ``litellm.acompletion`` are) and the
proxy.
"""

from __future__ import annotations

import logging
import os

# LiteLLM fetches its price map over the network when it is imported, unless told to read the copy it
# ships; papayya works offline. A user's own setting wins.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

try:
    import litellm
except ImportError as exc:
    raise ImportError(
        "papayya_litellm needs the litellm package; install it with pip install 'papayya[litellm]'."
    ) from exc

from papayya_litellm.calls import ORIGINAL, TARGETS, wrap

__all__ = ["instrument", "instrumented", "uninstrument"]

log = logging.getLogger("papayya.litellm")


def instrument() -> None:
    """Record LiteLLM's ``completion``, ``acompletion``, ``embedding`` and ``aembedding`` when called
    inside papayya attempts. Instrumenting twice is harmless; outside an attempt nothing changes."""
    for target in TARGETS:
        current = getattr(litellm, target.name)
        if not hasattr(current, ORIGINAL):
            setattr(litellm, target.name, wrap(target, current))


def uninstrument() -> None:
    """Undo ``instrument``: LiteLLM's functions are the originals again."""
    for target in TARGETS:
        current = getattr(litellm, target.name)
        original = getattr(current, ORIGINAL, None)
        if original is not None:
            setattr(litellm, target.name, original)


def instrumented() -> bool:
    """True while ``instrument`` is in effect."""
    return all(hasattr(getattr(litellm, t.name), ORIGINAL) for t in TARGETS)
