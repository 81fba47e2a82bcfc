"""The ``run`` object: what a user's function can ask and do while it processes one item.

``run`` reads the current attempt from a ContextVar, so it works the same in threads and asyncio
tasks. Each journaled call (``step``, ``tool``, ``retrieve``, ``llm``) gets a step key that is stable
across attempts (``kind:name#n``); a retried or resumed attempt gets the recorded result back instead
of running the call (and paying for it) again.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import inspect
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

from pydantic_core import to_jsonable_python

from papayya import ledger, secrets
from papayya.errors import AttemptAbandoned, JournalMiss
from papayya.models import Item, LLMCall, Reason
from papayya.pricing import Price, Usage
from papayya.ratelimit import retry_after_of

if TYPE_CHECKING:
    from papayya.agent import Agent
    from papayya.budgets import Accounts
    from papayya.runtime import Runtime

log = logging.getLogger("papayya")

T = TypeVar("T")


_retrievers: dict[str, Callable[..., Any]] = {}
_retrievers_lock = threading.Lock()


def retriever(fn: Callable[..., Any] | None = None, *, name: str = "default") -> Any:
    """Register a retriever that ``run.retrieve(...)`` calls. Usable as ``@retriever`` or with a name."""

    def register(f: Callable[..., Any]) -> Callable[..., Any]:
        with _retrievers_lock:
            _retrievers[name] = f
        return f

    return register(fn) if fn is not None else register


@dataclass(eq=False)
class AttemptContext:
    """Everything about the attempt in progress. Mutable; owned by one attempt."""

    runtime: Runtime
    agent: Agent
    tenant_id: str
    run_id: UUID
    item_id: UUID
    item: Item
    attempt_id: UUID
    attempt: int
    lease_token: int
    failures: int
    from_journal: bool
    backend: str
    journal: dict[str, Any]
    price_overrides: dict[tuple[str, str], dict[str, Decimal | None]]
    accounts: Accounts
    llm_mode: str = "live"  # "batch": calls with a batch endpoint go in a provider batch (papayya.batches)
    signals: list[Reason] = field(default_factory=list)
    counters: Counter[str] = field(default_factory=Counter)
    capturing: bool = False
    abandoned: bool = False
    # Whether the attempt began (hooks saw it start): a native worker's buffered item begins when a
    # thread takes it, and one given back before that never began.
    begun: bool = True
    cost_usd: Decimal = Decimal(0)
    cost_unknown: bool = False
    started: float = field(default_factory=time.monotonic)
    # Monotonic time until which this attempt's lease is known to hold: set from the moment a claim or
    # heartbeat that (re)granted it was *sent*, so it never outlives the lease on the database clock.
    lease_until: float | None = None
    # Paid calls sent and not yet recorded: an attempt given back while one is on the wire waits for
    # its record (``settle_paying``), so the next attempt finds it in the journal instead of paying again.
    paying: int = 0
    _paying_cv: threading.Condition = field(default_factory=threading.Condition, repr=False)

    # -- paid calls in flight ---------------------------------------------------------------------

    def paying_begins(self) -> None:
        with self._paying_cv:
            self.paying += 1

    def paying_ends(self) -> None:
        with self._paying_cv:
            self.paying -= 1
            self._paying_cv.notify_all()

    def settle_paying(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until no paid call of this attempt is on the wire (each is
        recorded, or failed); False when one still is. Call it after ``abandoned`` is set, so no new
        call starts meanwhile."""
        with self._paying_cv:
            return self._paying_cv.wait_for(lambda: self.paying == 0, timeout=max(0.0, timeout))

    # -- journal ----------------------------------------------------------------------------------

    def next_key(self, kind: str, name: str, *, peek: bool = False) -> str:
        base = f"{kind}:{name}"
        n = self.counters[base] + 1
        if not peek:
            self.counters[base] = n
        return f"{base}#{n}"

    def check_alive(self) -> None:
        if self.abandoned:
            raise AttemptAbandoned(f"attempt {self.attempt} of item {self.item.id} was abandoned")

    def check_lease(self) -> None:
        """Before paying for a call: stop unless this attempt still owns its item.

        A worker that was frozen, partitioned or told by its heartbeat that the item is no longer its
        own must not pay for it: the item has gone (or will go) to another worker, which would pay too.
        """
        self.check_alive()
        if self.lease_until is not None and time.monotonic() > self.lease_until:
            self.abandoned = True
            raise AttemptAbandoned(
                f"attempt {self.attempt} of item {self.item.id} stopped before a paid call: its lease "
                "was not renewed in time, so the item may belong to another worker now"
            )

    def recorded(self, key: str, request_hash: str) -> tuple[bool, Any]:
        """(True, result) when the journal holds ``key`` for this same request."""
        entry = self.journal.get(key)
        if entry is None:
            return False, None
        if self.from_journal:  # debugging a recorded run: its answers, even if the question moved
            return True, self._result(entry)
        if entry.get("hash") not in (None, request_hash):
            log.warning(
                "item %s: step %s was recorded for a different request; running it again",
                self.item.id,
                key,
            )
            return False, None
        return True, self._result(entry)

    def _result(self, entry: dict[str, Any]) -> Any:
        """A journal entry's result, read back from the blob store when it was large."""
        return self.runtime.blobs.expand(self.tenant_id, entry.get("result"))

    def remember(self, key: str, request_hash: str, result: Any) -> None:
        self.journal[key] = {"result": result, "hash": request_hash}

    def record_step(self, key: str, kind: str, result: Any, request_hash: str) -> Any:
        encoded = to_jsonable_python(result, fallback=repr)
        self.runtime.store.step_record(
            item_id=self.item_id,
            tenant_id=self.tenant_id,
            attempt_id=self.attempt_id,
            step_key=key,
            kind=kind,
            result=self.runtime.blobs.shrink(self.tenant_id, encoded),
            request_hash=request_hash,
        )
        self.remember(key, request_hash, encoded)
        return encoded

    def signal(self, reason: Reason) -> None:
        self.signals.append(reason)


current: contextvars.ContextVar[AttemptContext | None] = contextvars.ContextVar(
    "papayya_attempt", default=None
)


def _ctx() -> AttemptContext:
    ctx = current.get()
    if ctx is None:
        raise RuntimeError(
            "papayya.run is only available inside an @agent function while it processes an item; "
            "call the agent through .map() (or a papayya backend)."
        )
    ctx.check_alive()
    return ctx


def _journaled(
    kind: str,
    name: str,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    after: Callable[[AttemptContext, str, Any], None] | None = None,
) -> Any:
    ctx = _ctx()
    key = ctx.next_key(kind, name)
    digest = request_hash(fn, args, kwargs)
    found, result = ctx.recorded(key, digest)
    if found:
        if after is not None:
            after(ctx, name, result)
        return _ready(result) if is_async_callable(fn) else result
    if is_async_callable(fn):

        async def run_async() -> Any:
            value = await fn(*args, **kwargs)
            ctx.check_alive()
            await asyncio.to_thread(ctx.record_step, key, kind, value, digest)
            if after is not None:
                after(ctx, name, value)
            return value

        return run_async()
    value = fn(*args, **kwargs)
    ctx.check_alive()
    ctx.record_step(key, kind, value, digest)
    if after is not None:
        after(ctx, name, value)
    return value


_UNHASHED = frozenset({"extra_headers", "timeout"})  # transport details, not the question asked


def request_hash(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """A digest of what a step asks: the callable's name and its arguments (as JSON)."""
    name = getattr(inspect.unwrap(fn), "__qualname__", type(fn).__qualname__)
    payload = [name, args, {k: v for k, v in kwargs.items() if k not in _UNHASHED}]
    text = json.dumps(to_jsonable_python(payload, fallback=repr), sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def is_async_callable(fn: Callable[..., Any]) -> bool:
    """True for ``async def`` functions, also behind sync-looking decorators (the OpenAI and Anthropic
    SDKs wrap their async ``create`` methods in one)."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(inspect.unwrap(fn))


async def _ready(value: Any) -> Any:
    return value


def _tool_check(ctx: AttemptContext, name: str, result: Any) -> None:
    if result is None:
        ctx.signal(Reason(code="tool_returned_none", path=name, message=f"tool {name!r} returned None"))


def _retrieval_check(ctx: AttemptContext, name: str, result: Any) -> None:
    if result is None or (hasattr(result, "__len__") and len(result) == 0):
        ctx.signal(Reason(code="retrieval_empty", path=name, message=f"retriever {name!r} found nothing"))


def replayed(ctx: AttemptContext, key: str, provider: str, model: str | None, stop: str | None) -> None:
    """A call answered from the journal: it degrades the item as the paid one did, and plugins hear of it."""
    ledger.signal_stop(ctx, provider, model, stop)
    ctx.runtime.hooks.llm_call_replayed(ctx, key, provider, model, stop)


@dataclass(eq=False)
class PaidCall:
    """One LLM call that goes to the provider, from its budget reservation to its ledger row.

    ``run.llm`` pays through it, and so do the integrations that see a call as events rather than as
    a function to wrap (``papayya_langchain``'s callback handler): ``plan`` (from-journal replays never
    get here), ``reserve`` before the request leaves, then ``finish`` with what the provider reported,
    or ``failed``.
    """

    ctx: AttemptContext
    provider: str
    model: str  # as asked; the ledger records the one the response reports, when it does
    key: str
    digest: str
    worst: Usage
    estimate: Decimal | None
    reserved: Decimal = Decimal(0)
    started: float = 0.0

    @classmethod
    def plan(
        cls,
        ctx: AttemptContext,
        *,
        provider: str,
        model: str,
        key: str,
        digest: str,
        request: dict[str, Any],
        max_tokens: int | None = None,
        max_input_tokens: object = None,
        estimate_usd: object = None,
    ) -> PaidCall:
        """The call's worst case (see ``ledger.estimate_usage``), priced; nothing reserved yet.

        Raises:
            JournalMiss: a from-journal replay reached a call its journal does not hold.
            BudgetError: ``max_input_tokens`` or ``estimate_usd`` is not a finite number >= 0.
        """
        if ctx.from_journal:
            raise JournalMiss(
                f"Step {key} of item {ctx.item.id} has no recorded response, and a from-journal replay "
                "never calls a provider; replay without --from-journal to call it."
            )
        worst = ledger.estimate_usage(
            ctx, request, max_tokens, model=model, max_input_tokens=max_input_tokens
        )
        cost = ledger.estimate(ctx, provider, model, worst, estimate_usd=estimate_usd)
        return cls(ctx, provider, model, key, digest, worst, cost)

    @property
    def tokens(self) -> int:
        return self.worst.input_tokens + self.worst.output_tokens

    def reserve(self) -> None:
        """Wait for the rate limit, then reserve the worst case on the budgets (Paused: no room)."""
        # Rate limit first: a call waiting for its turn should not hold budget others could use.
        self.ctx.runtime.ratelimits.acquire(self.provider, self.model, self.ctx.tenant_id, self.tokens)
        self._reserve()

    async def reserve_async(self) -> None:
        await self.ctx.runtime.ratelimits.acquire_async(
            self.provider, self.model, self.ctx.tenant_id, self.tokens
        )
        await asyncio.to_thread(self._reserve)

    def _reserve(self) -> None:
        ctx = self.ctx
        ctx.check_lease()
        self.reserved = ctx.runtime.budgets.reserve(
            ctx.accounts, self.estimate, what=f"{self.provider}/{self.model}"
        )
        # Last look just before the request leaves: reserving may have waited on the store, and a
        # worker frozen meanwhile must not wake up and pay for an item that is no longer its own.
        try:
            ctx.check_lease()
        except BaseException:
            ctx.runtime.budgets.release(ctx.accounts, self.reserved)
            raise
        ctx.paying_begins()  # ends in failed() or finish()
        self.started = time.perf_counter()

    def failed(self, exc: BaseException) -> None:
        """The request failed: its reservation goes back; a 429 closes the rate-limit key for everyone."""
        ctx = self.ctx
        try:
            ctx.runtime.budgets.release(ctx.accounts, self.reserved)
            limits = ctx.runtime.ratelimits
            limits.settle(self.provider, self.model, ctx.tenant_id, self.tokens, 0)
            retry_after = retry_after_of(exc)
            if retry_after is not None:  # the provider said 429: close the key for every worker
                limits.close(self.provider, self.model, retry_after)
        finally:
            ctx.paying_ends()

    def finish(
        self,
        *,
        model: str | None,
        usage: Usage,
        stop_reason: str | None,
        journal_result: Any = None,
        fallback: Price | None = None,
    ) -> LLMCall:
        """Write the ledger row (and the journal step, when ``journal_result`` is not None) in one write,
        settling the reservation on the call's cost."""
        ctx = self.ctx
        latency = (time.perf_counter() - self.started) * 1000
        try:
            return self._record(
                model=model,
                usage=usage,
                stop_reason=stop_reason,
                journal_result=journal_result,
                latency=latency,
                fallback=fallback,
            )
        finally:
            ctx.paying_ends()

    def _record(
        self,
        *,
        model: str | None,
        usage: Usage,
        stop_reason: str | None,
        journal_result: Any,
        latency: float,
        fallback: Price | None,
    ) -> LLMCall:
        ctx = self.ctx
        ctx.runtime.ratelimits.settle(
            self.provider, self.model, ctx.tenant_id, self.tokens, usage.input_tokens + usage.output_tokens
        )
        return ledger.record(
            ctx,
            provider=self.provider,
            model=model or self.model,
            usage=usage,
            stop_reason=stop_reason,
            latency_ms=latency,
            step_key=self.key,
            idempotency_key=f"papayya-{ctx.item_id}-{self.key}",
            journal_result=journal_result,
            journal=journal_result is not None,
            request_hash=self.digest,
            reserved=self.reserved,
            fallback=fallback,
        )


@dataclass(frozen=True, slots=True)
class BatchEndpoint:
    """Where a provider batch can carry a call (batch mode): the batch API's endpoint for the method
    (``/v1/chat/completions``) and the client's base URL (so the batch goes where the live call would)."""

    endpoint: str
    base_url: str = ""


class Run:
    """The ``run`` object. Import it (``from papayya import run``) and use it inside an agent."""

    @property
    def active(self) -> bool:
        """True inside an attempt."""
        return current.get() is not None

    @property
    def tenant(self) -> str:
        return _ctx().tenant_id

    @property
    def run_id(self) -> UUID:
        return _ctx().run_id

    @property
    def item(self) -> Item:
        return _ctx().item

    @property
    def item_id(self) -> UUID:
        return _ctx().item_id

    @property
    def attempt(self) -> int:
        """1 for the first try, 2 for the first retry, and so on."""
        return _ctx().attempt

    def step(self, name: str) -> Callable[..., Any]:
        """``run.step("parse")(fn, *args)``: call ``fn`` once per item; a retry gets the recorded result."""
        return lambda fn, *a, **kw: _journaled("step", name, fn, a, kw)

    def tool(self, name: str) -> Callable[..., Any]:
        """``run.tool("lookup")(fn, *args)``: a journaled tool call; a None result degrades the item."""
        return lambda fn, *a, **kw: _journaled("tool", name, fn, a, kw, _tool_check)

    def retrieve(self, query: Any, *, retriever: str = "default", **kwargs: Any) -> Any:
        """Call the registered retriever; an empty result degrades the item (``retrieval_empty``)."""
        fn = _retrievers.get(retriever)
        if fn is None:
            raise LookupError(
                f"No retriever named {retriever!r} is registered; decorate one with @papayya.retriever"
                + ("" if retriever == "default" else f"(name={retriever!r})")
                + "."
            )
        return _journaled("retrieve", retriever, fn, (query,), kwargs, _retrieval_check)

    def llm(
        self,
        name: str = "llm",
        *,
        provider: str,
        model: str | None = None,
        decode: Callable[[Any], Any] | None = None,
        max_tokens: int | None = None,
        max_input_tokens: int | None = None,
        estimate_usd: Decimal | float | str | None = None,
        stream: Callable[[Any, Callable[[Any], None]], Any] | None = None,
        priced_by: Callable[[Any], Price | None] | None = None,
        batch: BatchEndpoint | None = None,
    ) -> Callable[..., Any]:
        """``run.llm("summary", provider="openai")(client.chat.completions.create, model=..., ...)``.

        Once per item and step: the worst-case cost is reserved against the tenant's and the run's
        budgets (from the request's size and ``max_tokens``, or ``estimate_usd``), the provider is
        called, and usage, stop reason and cost go to the ledger with the response in the journal, in
        one write. A retried or resumed attempt that reaches the same step with the same request gets
        the recorded response back (through ``decode`` if given, e.g. ``ChatCompletion.model_validate``)
        and pays nothing. A budget with no room stops the item here as ``paused``.

        ``max_tokens`` is the output the reservation assumes (default: the request's own cap, else
        ``PAPAYYA_DEFAULT_MAX_OUTPUT_TOKENS``); ``max_tokens=0`` for a call that generates none
        (embeddings). ``max_input_tokens`` is the prompt tokens it assumes (default: estimated from the
        request, see ``papayya.ledger.estimate_usage``): give it when the provider may bill more input
        than papayya can see, e.g. files, or a tokenizer denser than the estimate. ``estimate_usd``
        replaces the whole worst-case cost. A budget is overshot only by what calls cost beyond what
        they reserved.

        ``stream`` makes it a streamed call: ``stream(opened, settle)`` gets what the provider call
        returned once the stream opened (after the reservation, as for any call) and returns what the
        caller gets; it calls ``settle({ledger.STREAM_EVENTS: [event, ...]})`` once, when the stream
        ends, is closed or is dropped, with the events the provider sent. A stream whose events reach
        their end (a stop reason and usage) is recorded and journaled like a response, and its events
        are what a retry gets back (through ``decode``); one that stopped short is recorded, not
        journaled, on the usage reported so far or else on its reservation (``ledger.abandoned_usage``).

        ``batch`` names the provider batch endpoint that can carry this call: in a run in batch mode
        (``llm_mode="batch"``) a call the journal does not answer is not sent; it is charged its worst
        case at the batch price, kept as a pending request and the item stops here as ``waiting``
        (see :mod:`papayya.batches`). A streamed call is sent live.

        ``priced_by(response)`` is the price the client library computed for a response (LiteLLM's
        cost map), used only when neither the tenant's prices nor papayya's catalog know the model; the
        ledger records it with its own ``price_source``. None: such a call's cost is unknown.

        Raises:
            BudgetError: ``max_input_tokens`` or ``estimate_usd`` is not a finite number >= 0 (raised
                when the call is made, before anything is reserved or paid).
        """

        def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            ctx = _ctx()
            # SDK methods hide ``async def`` behind sync decorators (openai's and anthropic's
            # ``AsyncCompletions.create``, ``AsyncMessages.create``); look through ``__wrapped__``.
            is_async = is_async_callable(fn)
            key = ctx.next_key("llm", name)
            digest = request_hash(fn, args, kwargs)
            found, recorded = ctx.recorded(key, digest)
            if found:
                # What the response says is re-derived from the recorded response, as when it was paid.
                got_model, _, stop = ledger.extract_usage(provider, recorded)
                replayed(ctx, key, provider, model or got_model, stop)
                result = decode(recorded) if decode is not None else recorded
                return _ready(result) if is_async else result
            paid = PaidCall.plan(
                ctx,
                provider=provider,
                model=str(model or kwargs.get("model") or "unknown"),
                key=key,
                digest=digest,
                request=kwargs,
                max_tokens=max_tokens,
                max_input_tokens=max_input_tokens,
                estimate_usd=estimate_usd,
            )
            if ctx.llm_mode == "batch":
                from papayya.batches import defer, sent_live

                if batch is not None and stream is None:
                    defer(ctx, paid, batch, kwargs)  # raises Waiting
                sent_live(name, provider, streamed=stream is not None)

            def finish(response: Any, *, whole: bool = True) -> Any:
                got_model, usage, stop = ledger.extract_usage(provider, response)
                if not whole:  # a stream that stopped short: nothing to journal, usage as far as known
                    usage, stop = ledger.abandoned_usage(provider, response, paid.worst)
                paid.finish(
                    model=model or got_model,
                    usage=usage,
                    stop_reason=stop,
                    journal_result=to_jsonable_python(response, fallback=repr) if whole else None,
                    fallback=priced_by(response) if priced_by is not None and whole else None,
                )
                return response

            def opened(response: Any) -> Any:
                assert stream is not None

                def settle(recorded: Any) -> None:
                    finish(recorded, whole=ledger.stream_complete(provider, recorded))

                return stream(response, settle)

            if is_async:

                async def run_async() -> Any:
                    await paid.reserve_async()
                    try:
                        response = await fn(*args, **kwargs)
                    except BaseException as exc:
                        await asyncio.to_thread(paid.failed, exc)
                        raise
                    if stream is not None:
                        return opened(response)
                    return await asyncio.to_thread(finish, response)

                return run_async()
            paid.reserve()
            try:
                response = fn(*args, **kwargs)
            except BaseException as exc:
                paid.failed(exc)
                raise
            if stream is not None:
                return opened(response)
            return finish(response)

        return call

    def record_llm_call(
        self,
        *,
        provider: str,
        model: str,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
        stop_reason: str | None = None,
        latency_ms: float | None = None,
        idempotency_key: str | None = None,
    ) -> LLMCall:
        """Record an LLM call made outside ``run.llm`` (usage only; nothing is journaled)."""
        return ledger.record(
            _ctx(),
            provider=provider,
            model=model,
            usage=Usage(input_tokens, output_tokens, cache_read_tokens, cache_write_tokens),
            stop_reason=stop_reason,
            latency_ms=latency_ms,
            step_key=None,
            idempotency_key=idempotency_key,
        )

    def degrade(self, reason: str, *, path: str | None = None, message: str = "") -> None:
        """Mark the item degraded for ``reason`` (a short stable code) even if it returns normally."""
        _ctx().signal(Reason(code=reason, path=path, message=message or reason))

    def secret(self, name: str) -> secrets.Secret:
        """The item's tenant's secret ``name`` (``papayya tenants secret set TENANT NAME``), decrypted,
        e.g. ``openai.OpenAI(api_key=run.secret("openai_api_key"))``. Another tenant's secrets are out
        of reach: the tenant is the item's own. Read each time, never journaled or logged; the value is
        a ``str`` whose ``repr`` is masked (:class:`papayya.secrets.Secret`).

        Raises:
            NotFound: the tenant has no secret of that name.
            SecretError: no key is configured, or the secret does not open under the keys configured.
        """
        ctx = _ctx()
        ring = secrets.keyring(ctx.runtime.settings)
        return secrets.read(ctx.runtime.store, ring, ctx.tenant_id, name)

    def idempotency_key(self, name: str = "llm") -> str:
        """A key for the next ``run.llm(name)`` call, stable across retries and resumes of that step."""
        ctx = _ctx()
        return f"papayya-{ctx.item_id}-{ctx.next_key('llm', name, peek=True)}"


run = Run()


# -- swallowed exceptions ------------------------------------------------------------------------
# A record at ERROR with exc_info, logged while the user's function runs, means an exception was
# caught and (probably) replaced by a default. We watch record creation rather than adding a handler,
# so the user's logging output is exactly what it was without papayya.

_previous_factory: Callable[..., logging.LogRecord] | None = None


def _record_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    assert _previous_factory is not None
    record = _previous_factory(*args, **kwargs)
    if record.levelno >= logging.ERROR and record.exc_info and record.exc_info[0] is not None:
        ctx = current.get()
        if ctx is not None and ctx.capturing and not record.name.startswith("papayya"):
            exc_type = record.exc_info[0].__name__
            ctx.signal(
                Reason(
                    code="swallowed_exception",
                    path=f"{record.module}.{record.funcName}:{exc_type}",
                    message=f"{exc_type} caught and logged in {record.funcName}: {record.getMessage()[:200]}",
                )
            )
    return record


def install_log_watch() -> None:
    global _previous_factory
    if _previous_factory is None:
        _previous_factory = logging.getLogRecordFactory()
        logging.setLogRecordFactory(_record_factory)
