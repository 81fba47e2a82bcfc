"""Provider rate limits, shared by every worker through the database, and 429 closures.

A limit is set at runtime for a provider, optionally narrowed to one model and one tenant (``*``
means every model / every tenant): requests per minute, tokens per minute, or both. Before an LLM
call, :meth:`RateLimiter.acquire` waits until every limit matching (provider, model, tenant) has room
for one more request of the call's estimated tokens, and until no 429 closure of that provider/model
is in force. :meth:`RateLimiter.close` records a provider's 429 Retry-After so that every worker stops
calling that model until then, instead of all of them retrying into the same wall.

Why a token bucket and not fixed one-minute windows: a fixed window lets every worker that waited
for the next minute fire at the same instant (the whole minute's allowance in the first second),
which is the burst the provider's own limiter answers with 429s. Providers meter continuously
(Anthropic documents a token bucket; OpenAI enforces per-minute limits over shorter slices), so
papayya does the same: each limit is a bucket holding at most one minute's allowance, refilled
continuously at its per-minute rate on the database clock. After the first burst, calls are spread
evenly, and a caller that finds the bucket short is told exactly when it will have room (deficit /
rate) instead of "at the top of the minute". The state is the same size as a window's (what is left,
and when), and the worst case over any 60 s is the same as a window's across its boundary: the full
bucket plus one minute of refill.

Taking from the buckets is one SQL statement (``rate_take`` in ``store/queries.sql``): the matching
rows are locked in key order and taken from only if all of them have room, so concurrent workers on
any number of machines never admit more than the limits allow, and a request refused by one limit
costs nothing from the others. A call whose estimate exceeds a whole minute's token allowance is
admitted on a full bucket and leaves the bucket in debt, paid back by waiting.

Token limits are taken on an estimate before the call; :meth:`RateLimiter.settle` then counts the
tokens the call really used, so a worst-case estimate does not hold tokens per minute below the real
limit. :meth:`RateLimiter.try_acquire` is the same check without waiting, for a caller that would
rather do something else.

Each RateLimiter caches which keys have limits and which closures are in force, refreshed from the
database at most every ``refresh`` seconds (1 s): with nothing configured for a key, ``acquire`` and
``settle`` make no database round trip at all, and a limit set or a 429 seen by another process takes
effect here within about a second. A limited key asks the database on every call, and the database
also checks closures then, so for it a 429 seen elsewhere applies at once.
"""

from __future__ import annotations

import asyncio
import email.utils
import enum
import logging
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from papayya.errors import RateLimitError

if TYPE_CHECKING:
    from papayya.store import Row, Store

log = logging.getLogger("papayya.ratelimit")

__all__ = ["ANY", "Closure", "RateLimit", "RateLimiter", "retry_after_of"]

ANY = "*"
"""The wildcard model or tenant: a limit on ``model="*"`` counts the calls to every model."""

MINUTE = 60.0
REFRESH_SECONDS = 1.0
# Sleep at most this long between looks at the cache, so a closure or a removed limit is noticed.
STEP_SECONDS = 0.25
# A wait the database reports is never shorter than this (no busy loop on rounding).
MIN_WAIT_SECONDS = 0.001
# A Retry-After beyond this is treated as this: a provider (or a proxy) asking for a day would
# otherwise stop every worker for a day.
MAX_CLOSURE_SECONDS = 3600.0

_MAX_PROVIDER = 128
_MAX_MODEL = 256
_MAX_RPM = 2**31 - 1  # integer column
_MAX_TPM = 2**63 - 1  # bigint column


class RateLimit(BaseModel):
    """One configured limit. ``*`` in ``model`` or ``tenant_id`` means every model / every tenant.

    ``requests_available`` and ``tokens_available`` are what its bucket holds now (``list_limits``).
    """

    provider: str
    model: str = ANY
    tenant_id: str = ANY
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    requests_available: int | None = None
    tokens_available: int | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def label(self) -> str:
        """``provider:model`` for people (``provider`` alone for every model), with the tenant."""
        target = self.provider if self.model == ANY else f"{self.provider}:{self.model}"
        return target if self.tenant_id == ANY else f"{target} for tenant {self.tenant_id!r}"


class Closure(BaseModel):
    """A provider/model closed after a 429 until ``closed_until`` (database clock)."""

    provider: str
    model: str
    closed_until: datetime
    closed_for: float


class _Next(enum.Enum):
    ADMIT = "admit"  # nothing limits or closes the key
    ASK = "ask"  # a limit applies: ask the database
    SLEEP = "sleep"  # closed, or told to wait: sleep, then look again


@dataclass(frozen=True, slots=True)
class _Snapshot:
    limited: frozenset[tuple[str, str, str]]
    loaded: float  # time.monotonic() when read

    def applies(self, provider: str, model: str, tenant_id: str) -> bool:
        if not self.limited:
            return False
        keys = self.limited
        return (
            (provider, model, tenant_id) in keys
            or (provider, model, ANY) in keys
            or (provider, ANY, tenant_id) in keys
            or (provider, ANY, ANY) in keys
        )


class RateLimiter:
    """Shared rate limits and 429 closures over a Store. Thread-safe; make one per process.

    Args:
        store: the papayya store every worker shares.
        period: seconds in a rate-limit "minute" (60). Tests shorten it; every limiter sharing a
            database must use the same value.
        refresh: seconds the cached limits and closures are trusted before they are read again.
    """

    def __init__(self, store: Store, *, period: float = MINUTE, refresh: float = REFRESH_SECONDS) -> None:
        if not (_is_number(period) and math.isfinite(period) and period > 0):
            raise RateLimitError(
                f"The rate-limit period must be a number of seconds above 0, not {period!r}."
            )
        if not (_is_number(refresh) and math.isfinite(refresh) and refresh >= 0):
            raise RateLimitError(f"The refresh interval must be a number of seconds >= 0, not {refresh!r}.")
        self.store = store
        self.period = float(period)
        self.refresh = float(refresh)
        self._snap: _Snapshot | None = None
        self._closed: dict[tuple[str, str], float] = {}  # (provider, model) -> monotonic deadline
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RateLimiter({self.store!r}, period={self.period:g})"

    # -- before a call ----------------------------------------------------------------------------

    def acquire(self, provider: str, model: str, tenant_id: str, tokens: int) -> float:
        """Wait until one request of ``tokens`` estimated tokens is allowed; return the seconds waited.

        Allowed means: every limit matching (provider, model, tenant) and their wildcards has room,
        and no 429 closure of provider/model (or provider/``*``) is in force. The request is then
        counted against all those limits at once. Returns at once, without touching the database,
        when nothing limits or closes the key.

        Raises:
            RateLimitError: ``tokens`` is not a whole number >= 0.
        """
        tokens = _tokens(tokens)
        started = time.monotonic()
        ask_at = 0.0
        while True:
            action, seconds = self._next(self._snapshot(), provider, model, tenant_id, ask_at)
            if action is _Next.ADMIT:
                break
            if action is _Next.ASK:
                wait = self._take(provider, model, tenant_id, tokens)
                if wait == 0:
                    break
                ask_at = time.monotonic() + wait
                continue
            time.sleep(seconds)
        return time.monotonic() - started

    async def acquire_async(self, provider: str, model: str, tenant_id: str, tokens: int) -> float:
        """:meth:`acquire` for asyncio: awaits instead of blocking the event loop."""
        tokens = _tokens(tokens)
        started = time.monotonic()
        ask_at = 0.0
        while True:
            snap = self._cached()
            if snap is None:
                snap = await asyncio.to_thread(self._snapshot)
            action, seconds = self._next(snap, provider, model, tenant_id, ask_at)
            if action is _Next.ADMIT:
                break
            if action is _Next.ASK:
                wait = await asyncio.to_thread(self._take, provider, model, tenant_id, tokens)
                if wait == 0:
                    break
                ask_at = time.monotonic() + wait
                continue
            await asyncio.sleep(seconds)
        return time.monotonic() - started

    def try_acquire(self, provider: str, model: str, tenant_id: str, tokens: int) -> float:
        """Take one request of ``tokens`` now if allowed, without waiting.

        Returns:
            0.0 when the request was allowed and counted; otherwise the seconds to wait before asking
            again (nothing is counted then).
        """
        tokens = _tokens(tokens)
        closed = self.closed_for(provider, model)
        if closed > 0:
            return closed
        if not self._snapshot().applies(provider, model, tenant_id):
            return 0.0
        return self._take(provider, model, tenant_id, tokens)

    def settle(self, provider: str, model: str, tenant_id: str, estimated: int, used: int) -> None:
        """After a call admitted with ``estimated`` tokens: count the ``used`` tokens instead.

        Token limits are taken on an estimate before the call (the prompt plus the output cap); giving
        back what the answer did not use keeps tokens per minute near the real limit instead of the
        worst case. No database round trip when no limit applies to the key.

        Raises:
            RateLimitError: a token count is not a whole number >= 0.
        """
        delta = _tokens(estimated) - _tokens(used)
        if delta != 0 and self._snapshot().applies(provider, model, tenant_id):
            self.store.rate_settle(provider, model, tenant_id, delta)

    def closed_for(self, provider: str, model: str) -> float:
        """Seconds left on a 429 closure of provider/model (or provider/``*``) as this process knows
        it (at most ``refresh`` seconds old); 0.0 when open."""
        self._snapshot()
        return max(0.0, self._closed_until(provider, model) - time.monotonic())

    # -- after a 429 ------------------------------------------------------------------------------

    def close(self, provider: str, model: str, retry_after: float) -> None:
        """Close provider/model for every worker for ``retry_after`` seconds (a 429's Retry-After).

        The closure ends at the database's now() + ``retry_after`` (at most an hour), and never
        earlier than a closure already in force. This process sees it at once, the others within
        ``refresh`` seconds.

        Raises:
            RateLimitError: ``retry_after`` is not a number of seconds >= 0, or provider/model is empty.
        """
        provider = _provider(provider)
        model = _model(model)
        if not (_is_number(retry_after) and math.isfinite(retry_after) and retry_after >= 0):
            raise RateLimitError(
                f"Retry-After must be a number of seconds >= 0, not {retry_after!r}; pass the value "
                "retry_after_of(exc) returned."
            )
        if retry_after == 0:
            return
        seconds = float(retry_after)
        if seconds > MAX_CLOSURE_SECONDS:
            log.warning(
                "%s/%s asked to wait %.0fs; closing it for %.0fs instead",
                provider,
                model,
                seconds,
                MAX_CLOSURE_SECONDS,
            )
            seconds = MAX_CLOSURE_SECONDS
        row = self.store.rate_close(provider, model, seconds)
        self._note_closed(provider, model, row["closed_for"])
        log.info("%s/%s is closed for %.1fs after a 429", provider, model, row["closed_for"])

    def closures(self) -> list[Closure]:
        """The closures in force, from the database."""
        return [Closure(**row) for row in self.store.rate_closures_open()]

    # -- configuration ----------------------------------------------------------------------------

    def set_limit(
        self,
        provider: str,
        model: str = ANY,
        tenant_id: str = ANY,
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
    ) -> RateLimit:
        """Set the limits of one key, replacing what it had (a limit not given is removed).

        Takes effect for this process at once and for every other within ``refresh`` seconds.

        Raises:
            RateLimitError: a limit is not a whole number above 0, neither limit is given, or the
                provider or model is empty.
            TenantError: ``tenant_id`` is neither ``*`` nor a usable tenant id.
        """
        provider, model, tenant_id = _key(provider, model, tenant_id)
        rpm = _limit("requests_per_minute", requests_per_minute, _MAX_RPM)
        tpm = _limit("tokens_per_minute", tokens_per_minute, _MAX_TPM)
        if rpm is None and tpm is None:
            raise RateLimitError(
                f"A rate limit for {RateLimit(provider=provider, model=model, tenant_id=tenant_id).label} "
                "needs requests_per_minute, tokens_per_minute or both; to lift it, remove it."
            )
        row = self.store.rate_limit_set(provider, model, tenant_id, rpm, tpm)
        self._snap = None
        return RateLimit(**row)

    def remove_limit(self, provider: str, model: str = ANY, tenant_id: str = ANY) -> bool:
        """Remove the limits of one key; False when it had none. Other keys' limits still apply."""
        provider, model, tenant_id = _key(provider, model, tenant_id)
        removed = self.store.rate_limit_delete(provider, model, tenant_id)
        self._snap = None
        return removed

    def list_limits(self) -> list[RateLimit]:
        """Every configured limit, by provider, model and tenant, with what its bucket holds now."""
        return [RateLimit(**row) for row in self.store.rate_limit_list(self.period)]

    # -- internals --------------------------------------------------------------------------------

    def _cached(self) -> _Snapshot | None:
        snap = self._snap
        if snap is not None and time.monotonic() - snap.loaded < self.refresh:
            return snap
        return None

    def _snapshot(self) -> _Snapshot:
        """The cached limits, read again (with the closures) when older than ``refresh``."""
        snap = self._cached()
        if snap is not None:
            return snap
        with self._lock:
            snap = self._cached()
            if snap is not None:
                return snap
            rows: list[Row] = self.store.rate_snapshot()
            now = time.monotonic()
            self._closed = {k: v for k, v in self._closed.items() if v > now}
            limited = set()
            for row in rows:
                if row["closed_for"] is None:
                    limited.add((row["provider"], row["model"], row["tenant_id"]))
                else:
                    key = (row["provider"], row["model"])
                    self._closed[key] = max(self._closed.get(key, 0.0), now + row["closed_for"])
            snap = self._snap = _Snapshot(frozenset(limited), now)
            return snap

    def _closed_until(self, provider: str, model: str) -> float:
        closed = self._closed
        return max(closed.get((provider, model), 0.0), closed.get((provider, ANY), 0.0))

    def _note_closed(self, provider: str, model: str, seconds: float) -> None:
        with self._lock:
            key = (provider, model)
            self._closed[key] = max(self._closed.get(key, 0.0), time.monotonic() + seconds)

    def _next(
        self, snap: _Snapshot, provider: str, model: str, tenant_id: str, ask_at: float
    ) -> tuple[_Next, float]:
        now = time.monotonic()
        closed = self._closed_until(provider, model) - now
        if closed > 0:
            return _Next.SLEEP, min(closed, STEP_SECONDS)
        if not snap.applies(provider, model, tenant_id):
            return _Next.ADMIT, 0.0
        if now < ask_at:
            return _Next.SLEEP, min(ask_at - now, STEP_SECONDS)
        return _Next.ASK, 0.0

    def _take(self, provider: str, model: str, tenant_id: str, tokens: int) -> float:
        """One atomic try against the database: 0.0 when taken, else the seconds to wait."""
        row = self.store.rate_take(provider, model, tenant_id, tokens, self.period)
        if row["closed_for"] is not None:
            self._note_closed(provider, model, row["closed_for"])
        if row["ok"]:
            return 0.0
        return max(float(row["wait_seconds"]), MIN_WAIT_SECONDS)


# -- reading a provider's 429 ----------------------------------------------------------------------


def retry_after_of(exc: BaseException) -> float | None:
    """The seconds a provider's 429 asks to wait, or None when ``exc`` is not a 429 or says nothing.

    Reads ``exc.status_code`` and the ``retry-after-ms`` / ``retry-after`` headers of
    ``exc.response`` (seconds, or an HTTP date), as raised by the ``openai`` and ``anthropic`` SDKs
    (``RateLimitError``), without importing either.
    """
    if getattr(exc, "status_code", None) != 429:
        return None
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if headers is None:
        return None
    millis = _seconds(_header(headers, "retry-after-ms"))
    if millis is not None:
        return millis / 1000
    text = _header(headers, "retry-after")
    seconds = _seconds(text)
    if seconds is None and text is not None:
        seconds = _until_http_date(text)
    return seconds


def _header(headers: Any, name: str) -> str | None:
    try:
        value = headers.get(name)  # httpx.Headers: case-insensitive
    except (AttributeError, TypeError):
        return None
    if value is None and isinstance(headers, Mapping):
        value = next((v for k, v in headers.items() if str(k).lower() == name), None)
    return None if value is None else str(value)


def _seconds(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return max(0.0, value) if math.isfinite(value) else None


def _until_http_date(text: str) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


# -- validation ------------------------------------------------------------------------------------


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _tokens(tokens: object) -> int:
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
        raise RateLimitError(
            f"A request's token estimate must be a whole number >= 0, not {tokens!r}; "
            "pass 0 when it is not known."
        )
    return tokens


def _provider(provider: object) -> str:
    if not isinstance(provider, str) or not provider.strip():
        raise RateLimitError(
            f"The provider is {'empty' if isinstance(provider, str) else repr(provider)}; "
            "name it as the LLM calls do, e.g. 'openai' or 'anthropic'."
        )
    if not provider.isprintable() or any(c in provider for c in ": *") or len(provider) > _MAX_PROVIDER:
        raise RateLimitError(
            f"Provider {provider[:40]!r} is not usable; give a provider name of 1 to {_MAX_PROVIDER} "
            "printable characters without spaces, ':' or '*', e.g. 'openai'."
        )
    return provider


def _model(model: object) -> str:
    if (
        not isinstance(model, str)
        or not model.strip()
        or model != model.strip()
        or not model.isprintable()
        or len(model) > _MAX_MODEL
    ):
        raise RateLimitError(
            f"Model {str(model)[:40]!r} is not usable; give a model name of 1 to {_MAX_MODEL} printable "
            "characters without surrounding spaces, or '*' for every model."
        )
    return model


def _key(provider: object, model: object, tenant_id: object) -> tuple[str, str, str]:
    from papayya.tenants import validate_tenant_id  # tenants imports the runtime, which may import us

    tenant = ANY if tenant_id == ANY else validate_tenant_id(tenant_id)
    return _provider(provider), _model(model), tenant


def _limit(name: str, value: object, most: int) -> int | None:
    if value is None:
        return None
    unit = "requests" if name.startswith("requests") else "tokens"
    if isinstance(value, bool) or not isinstance(value, int):
        raise RateLimitError(f"{name} must be a whole number of {unit} per minute, not {value!r}.")
    if value <= 0:
        raise RateLimitError(
            f"{name} must be above 0, not {value}; to lift the limit, leave it out or remove the limit."
        )
    if value > most:
        raise RateLimitError(f"{name} must be at most {most:,}, not {value:,}.")
    return value
