"""papayya's built-in plugin: error classification, registered like any third-party plugin."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from papayya.errors import PapayyaError, StoreUnavailable
from papayya.hookspecs import hookimpl
from papayya.models import ErrorCategory

_PROVIDER_MODULES = (
    "openai",
    "anthropic",
    "httpx",
    "httpcore",
    "google",
    "mistralai",
    "cohere",
    "groq",
    "botocore",  # AWS Bedrock through boto3: ClientError and its modelled subclasses
)
_BOTOCORE_TRANSPORT = ("HTTPClientError", "ConnectionError")  # base classes of its network errors
_TRANSIENT_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 529}


class Retryable(Exception):
    """Raise (or subclass) this in an agent to ask for a retry per the agent's policy."""


def _status(exc: BaseException) -> int | None:
    for attr in ("status_code", "status", "http_status"):
        value = getattr(exc, attr, None)
        if isinstance(value, int):
            return value
    response = getattr(exc, "response", None)
    if isinstance(response, dict):  # botocore's ClientError: the parsed error, with its HTTP status
        value = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    else:
        value = getattr(response, "status_code", None)
    return value if isinstance(value, int) else None


@hookimpl
def papayya_register_backends(register: Callable[[str, Callable[[], Any]], None]) -> None:
    """The native engine: items run by papayya's own workers on PostgreSQL."""
    from papayya.engine import NativeBackend

    register("native", NativeBackend)


@hookimpl(trylast=True)
def papayya_classify_error(exc: BaseException) -> tuple[ErrorCategory, bool]:
    """Provider errors (SDK exception modules, HTTP status) are retryable when transient; papayya's own
    store outages are retryable; user-code errors are not, unless they are ``Retryable``,
    ``TimeoutError`` or ``ConnectionError``."""
    if isinstance(exc, StoreUnavailable):
        return ErrorCategory.PAPAYYA, True
    if isinstance(exc, PapayyaError):
        return ErrorCategory.PAPAYYA, False
    module = type(exc).__module__.split(".")[0]
    status = _status(exc)
    if module in _PROVIDER_MODULES:
        transient = status is None or status in _TRANSIENT_STATUS or status >= 500
        if module == "botocore" and status is None:
            # botocore raises its client-side mistakes (bad parameters, no credentials) without a
            # status too: only its transport failures are worth another try.
            transient = any(b.__name__ in _BOTOCORE_TRANSPORT for b in type(exc).__mro__)
        return ErrorCategory.PROVIDER, transient
    if isinstance(exc, Retryable | TimeoutError | ConnectionError):
        return ErrorCategory.USER, True
    return ErrorCategory.USER, False
