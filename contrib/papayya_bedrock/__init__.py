"""papayya_bedrock: every AWS Bedrock Converse call an agent makes is journaled, priced and attributed.

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

Outside an attempt the client behaves exactly as before. Instrumenting twice is harmless, and
``uninstrument`` undoes it.

Not recorded:

- ``converse_stream`` inside an attempt raises ``StreamingNotSupported``: papayya cannot journal or
  price a Bedrock stream yet; call ``converse``.
- ``invoke_model`` and ``invoke_model_with_response_stream`` run as before, unrecorded: inside an
  attempt the first such call of the process logs a warning on ``papayya.bedrock`` saying so (its
  cost is in no ledger or budget); call ``converse``, or wrap the call in ``run.llm`` yourself.
- The async clients (``aioboto3``, ``aiobotocore``) are not instrumented.

boto3 cannot send papayya's ``Idempotency-Key`` header (Bedrock has no idempotency key), so a request
that reached Bedrock but whose answer was lost on the way back is paid again by the retry.
"""

from __future__ import annotations

import base64
import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

try:
    import botocore.client
except ImportError as exc:
    raise ImportError(
        "papayya_bedrock needs the boto3 package; install it with pip install 'papayya[bedrock]'."
    ) from exc

from papayya.context import run
from papayya.errors import StreamingNotSupported

log = logging.getLogger("papayya.bedrock")

__all__ = ["StreamingNotSupported", "instrument", "uninstrument"]

Client = TypeVar("Client")

STEP = "bedrock.converse"
_ORIGINAL = "__papayya_original__"  # set on every wrapper, naming the method it replaced
_BYTES = "__papayya_bytes__"  # a bytes value in the journal: {_BYTES: base64}


def instrument(client: Client, *, provider: str = "bedrock") -> Client:
    """Record the client's ``converse`` calls made inside papayya attempts; returns the same client.

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
        ("invoke_model", _wrap_unrecorded),
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
    @functools.wraps(original)
    def converse_stream(*args: Any, **kwargs: Any) -> Any:
        if run.active:
            raise StreamingNotSupported(
                "client.converse_stream is not supported inside a papayya agent, as papayya cannot "
                "journal or price a Bedrock stream; call client.converse instead."
            )
        return original(*args, **kwargs)

    return converse_stream


def _wrap_unrecorded(original: Callable[..., Any], provider: str) -> Callable[..., Any]:
    """A method papayya does not record: it runs as before, and inside an attempt it says so once."""

    @functools.wraps(original)
    def unrecorded(*args: Any, **kwargs: Any) -> Any:
        if run.active and original.__name__ not in _warned:
            _warned.add(original.__name__)
            log.warning(
                "client.%s inside a papayya agent is not recorded: its cost is in no ledger or budget, "
                "and a retry pays for it again; call client.converse, or wrap the call in run.llm.",
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
