"""Which provider and model a LiteLLM call goes to, in the names papayya's ledger prices under.

LiteLLM names a call's provider ``custom_llm_provider`` (from the model's prefix, ``openai/gpt-4o``,
or the argument of that name); the ledger, the rate limits and ``genai-prices`` use the catalog's
provider ids. The few that are spelled apart are translated here; any other name is kept as LiteLLM
spells it (its calls are then priced as unknown unless a tenant override names it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import litellm

# LiteLLM's provider name -> papayya's provider name, where they differ: mostly genai-prices' ids,
# except ``bedrock``, which stays papayya's name for Bedrock (as papayya_bedrock records it; priced at
# the catalog's ``aws`` prices, see papayya.pricing).
CATALOG_IDS = {
    "text-completion-openai": "openai",
    "sagemaker": "aws",
    "gemini": "google",
    "vertex_ai": "google",
    "vertex_ai_beta": "google",
    "xai": "x-ai",
    "cohere_chat": "cohere",
    "together_ai": "together",
    "fireworks_ai": "fireworks",
    "moonshot": "moonshotai",
    "voyage": "voyageai",
    "meta_llama": "meta",
}


@dataclass(frozen=True)
class Route:
    """Where one call goes.

    Attributes:
        model: The model as the provider names it (``gpt-4o-mini`` for ``openai/gpt-4o-mini``).
        litellm_provider: LiteLLM's ``custom_llm_provider`` (``openai``, ``vertex_ai``...).
        provider: The provider id the ledger records and prices under (``openai``, ``google``...).
    """

    model: str
    litellm_provider: str
    provider: str


def route(request: dict[str, Any]) -> Route:
    """The route of a call with these arguments, resolved as LiteLLM resolves it before it sends.

    A model LiteLLM cannot place (no prefix, unknown name) is kept under the provider ``unknown``: the
    call itself then fails in LiteLLM before anything is sent, and is not recorded.
    """
    model = str(request.get("model") or "")
    given = request.get("custom_llm_provider")
    try:
        bare, litellm_provider, _, _ = litellm.get_llm_provider(
            model=model,
            custom_llm_provider=given,
            api_base=request.get("api_base") or request.get("base_url"),
            api_key=request.get("api_key"),
        )
    except Exception:  # LiteLLM raises its BadRequestError; the call raises it again when sent
        litellm_provider = str(given or "unknown")
        bare = model.removeprefix(f"{litellm_provider}/")
    return Route(
        model=str(bare),
        litellm_provider=litellm_provider,
        provider=CATALOG_IDS.get(litellm_provider, litellm_provider),
    )
