"""Everything papayya raises, in one place.

Each error says what happened and what to do. Driver errors (psycopg) are translated once, at the
store boundary, into these. A caller never sees a driver's exception, and each error is also the
builtin a Python caller would expect: a refused value is a ``ValueError`` (``InvalidInput``), a lookup
of something that does not exist a ``LookupError`` (``NotFound``). So ``except ValueError`` around a
call catches papayya's refusals too, and ``except papayya.PapayyaError`` catches everything papayya
raises on purpose.

Hierarchy::

    Exception
    └── PapayyaError                 anything papayya raises on purpose
        ├── InvalidInput             a value given to papayya was refused (also a ValueError)
        │   ├── ConfigError          malformed configuration (URL, setting, unknown option)
        │   ├── InputError           bad input given to map()/submit(); names the item and the fix
        │   ├── TenantError          unknown tenant (strict mode) or an invalid tenant id
        │   ├── BudgetError          a budget setting is invalid, or a run cannot be paused or resumed
        │   └── RateLimitError       a rate limit or a 429 closure was given unusable values
        ├── NotFound                 a run, item or tenant asked for by id does not exist (also a
        │                            LookupError)
        ├── StoreUnavailable         the database cannot be reached or refused the connection
        ├── StoreClosed              papayya's pool was closed while code still used it (not retried)
        ├── MigrationError           the schema could not be brought up to date
        ├── AgentNotImportable       resume/replay cannot import the agent a run was started with
        ├── ReplayError              a replay's slice is empty or cannot be replayed as asked
        │   └── JournalMiss          a from-journal replay reached a step with no recorded response
        ├── StaleLease               a worker tried to change an item it no longer holds
        ├── SecretError              a tenant's secret cannot be stored or read (no key, unknown key, altered)
        └── StreamingNotSupported    stream=True inside an attempt on a method papayya cannot record so

    BaseException
    └── ControlFlow                  stops a user's function; a bare ``except Exception`` does not swallow it
        ├── AttemptAbandoned         the attempt lost its lease (timed out or fenced); its result is void
        └── Paused                   a budget broke or the run was paused: the item stops at this LLM call

Control-flow signals derive from ``BaseException`` on purpose: user code that wraps an LLM call in
``except Exception`` must not turn "stop now" into "carry on with a default".
"""

from __future__ import annotations

from typing import Any


class PapayyaError(Exception):
    """Base class of the errors papayya raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message,))


class InvalidInput(PapayyaError, ValueError):
    """A value given to papayya (an item, an id, an amount, a setting) was refused, in one sentence
    naming it and the rule; nothing was recorded. Also a ``ValueError``."""


class ConfigError(InvalidInput):
    """Configuration is malformed or names something that does not exist."""


class StoreUnavailable(PapayyaError):
    """The PostgreSQL store cannot be reached."""


class StoreClosed(PapayyaError):
    """papayya's connection pool was closed (``papayya.reset()``, the runtime shut down) while code
    still used it. Unlike ``StoreUnavailable`` this is not retried: nothing will reopen that pool."""


class MigrationError(PapayyaError):
    """A migration failed; the schema was left at the last version that applied cleanly."""


class InputError(InvalidInput):
    """Items given to ``map()`` or ``submit()`` are not usable. Nothing was recorded."""

    def __init__(self, message: str, *, item_key: str | None = None, index: int | None = None) -> None:
        super().__init__(message)
        self.item_key = item_key
        self.index = index

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_input_error, (self.message, self.item_key, self.index))


def _rebuild_input_error(message: str, item_key: str | None, index: int | None) -> InputError:
    return InputError(message, item_key=item_key, index=index)


class TenantError(InvalidInput):
    """A tenant id is invalid, or unknown while unknown tenants are refused."""


class BudgetError(InvalidInput):
    """A budget is invalid (negative, not a number, unknown period), or a run cannot be paused or
    resumed as asked (it is not running, or not paused)."""


class AgentNotImportable(PapayyaError):
    """The agent a run was started with cannot be imported here (moved script, nested function)."""


class ReplayError(PapayyaError):
    """A replay cannot be made as asked (empty slice, no journal to answer from)."""


class JournalMiss(ReplayError):
    """A from-journal replay reached an LLM step the original never recorded; it pays for nothing."""


class NotFound(PapayyaError, LookupError):
    """A run, item or tenant looked up by id does not exist. Also a ``LookupError``."""


class StaleLease(PapayyaError):
    """A state change carried a fencing token older than the item's; it was rejected."""


class RateLimitError(InvalidInput):
    """A rate limit (or a closure, or a request's token estimate) was given unusable values."""


class SecretError(PapayyaError):
    """A tenant's secret cannot be stored or read: no key is configured, it was sealed under a key not
    configured here, or it does not decrypt (altered, or copied from another tenant or name). The
    message names the tenant and the secret, never its value or a key."""


class StreamingNotSupported(PapayyaError):
    """``stream=True`` inside a papayya attempt on an instrumented method whose streams papayya cannot
    journal and price (one that does not stream, such as embeddings); the streams of chat completions,
    responses and Anthropic messages are recorded."""


class ControlFlow(BaseException):
    """Base of signals that stop a user's function and must not be swallowed by it."""


class Waiting(ControlFlow):
    """The item stops at an LLM call sent in a provider batch (batch mode) and becomes ``waiting``; it
    runs again from the top once the batch answers, and the journal gives it the answer.

    Attributes:
        custom_id: The deferred request's id (``papayya batches show``).
    """

    def __init__(self, custom_id: str) -> None:
        super().__init__(f"waiting for the answer to batch request {custom_id}")
        self.custom_id = custom_id

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.custom_id,))


class AttemptAbandoned(ControlFlow):
    """The attempt was abandoned (timeout or lost lease); whatever it returns is discarded."""


class Paused(ControlFlow):
    """The item stops here and becomes ``paused``, its journal intact: a budget has no room for the next
    LLM call, the call's price is unknown under a budget, or a person paused the run.

    Attributes:
        kind: ``budget:tenant``, ``budget:run``, ``unpriced`` or ``paused`` (the run was paused).
        reason: one sentence for people, e.g. "tenant t47 has spent $40.00 of its $40.00 month budget".
    """

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.kind, self.reason))
