"""``@agent``: turn the function a user already has into an accountable agent with ``map()``."""

from __future__ import annotations

import functools
import inspect
import logging
import sys
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, is_dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from pydantic import BaseModel
from pydantic_core import PydanticSerializationError, to_jsonable_python

from papayya import registry, validate
from papayya.errors import InputError
from papayya.models import Item
from papayya.outcomes import Check

if TYPE_CHECKING:
    from papayya.runtime import Runtime

log = logging.getLogger("papayya")

MAX_KEY_LENGTH = validate.MAX_KEY_LENGTH
MAX_CONCURRENCY = 10_000


class Agent:
    """A decorated function that processes one item. Call it directly to run it without papayya."""

    def __new__(cls, fn: Callable[..., Any], **options: Any) -> Agent:
        # An ``async def`` agent is awaitable when called directly, and frameworks that inspect
        # ``__call__`` (Temporal activities, say) see a coroutine function.
        kind = AsyncAgent if cls is Agent and inspect.iscoroutinefunction(fn) else cls
        return super().__new__(kind)

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        output: type[BaseModel] | None = None,
        checks: Sequence[Check] = (),
        retries: int = 0,
        backoff: float = 1.0,
        backoff_max: float = 60.0,
        timeout: float | None = None,
    ) -> None:
        if retries < 0:
            raise ValueError("retries must be >= 0")
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be a positive number of seconds")
        if output is not None and not (isinstance(output, type) and issubclass(output, BaseModel)):
            raise TypeError("output= must be a pydantic model class")
        self.fn = fn
        self.name = validate.text(name or f"{importable_module_name(fn)}.{fn.__qualname__}", "agent name")
        self.output = output
        self.checks = tuple(checks)
        self.max_attempts = retries + 1
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.timeout = timeout
        self.is_async = inspect.iscoroutinefunction(fn)
        functools.update_wrapper(self, fn)
        registry.register(self)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<papayya agent {self.name}>"

    def map(
        self,
        items: Iterable[Any],
        *,
        tenant: str,
        run_name: str | None = None,
        concurrency: int = 8,
        progress: bool | None = None,
        budget_usd: Decimal | float | str | None = None,
        priority: int = 0,
    ) -> RunResult:
        """Run every item for ``tenant`` and wait; return the run's accountable result.

        Every item is recorded (input snapshot) before any runs, and ends ``succeeded``, ``degraded``
        or ``failed`` — or, when a budget breaks (``budget_usd`` for this run, on top of the tenant's),
        the run pauses: the item at its LLM call becomes ``paused``, the rest stay ``queued``, and
        ``map()`` returns a result with status ``paused``; ``papayya resume RUN`` continues it. Bad input
        raises InputError naming the item, before anything is recorded. ``papayya worker`` processes
        serving this agent help with the run when they are running.
        """
        rt, run_id, refs = self._record(items, tenant, run_name, concurrency, budget_usd, priority)
        return self._execute(rt, run_id, tenant, refs, concurrency, progress, run_name)

    def submit(
        self,
        items: Iterable[Any],
        *,
        tenant: str,
        run_name: str | None = None,
        concurrency: int = 8,
        budget_usd: Decimal | float | str | None = None,
        priority: int = 0,
        llm_mode: str | None = None,
    ) -> RunHandle:
        """Record every item for ``tenant`` and return at once: workers of the configured backend run
        them (``papayya worker MODULE:AGENT`` for the native engine). Higher ``priority`` runs are served
        first. ``llm_mode="batch"`` sends the run's LLM calls through the providers' batch APIs at their
        batch price (default: the ``llm_mode`` setting; see :mod:`papayya.batches`). Returns a handle
        with the ``run_id``; ``handle.wait()`` waits and returns the result."""
        rt, run_id, refs = self._record(
            items, tenant, run_name, concurrency, budget_usd, priority, llm_mode=llm_mode
        )
        rt.backend.submit(rt, self, run_id=run_id, tenant_id=tenant, items=refs, concurrency=concurrency)
        return RunHandle(run_id, tenant)

    def _record(
        self,
        items: Iterable[Any],
        tenant: str,
        run_name: str | None,
        concurrency: int,
        budget_usd: Decimal | float | str | None,
        priority: int,
        *,
        llm_mode: str | None = None,
    ) -> tuple[Runtime, uuid.UUID, list[tuple[uuid.UUID, str]]]:
        """Validate and record a run and its items (nothing is recorded when an item is bad)."""
        from papayya import tenants
        from papayya.budgets import parse_amount
        from papayya.runtime import get_runtime

        validate.count(concurrency, "concurrency", high=MAX_CONCURRENCY)
        validate.count(priority, "priority", low=-1_000_000, high=1_000_000)
        validate.optional_text(run_name, "run name")
        budget = None if budget_usd is None else parse_amount(budget_usd, "run budget")
        validate.tenant_id(tenant)
        tenants.validate_tenant_id(tenant)
        rt = get_runtime()
        mode = _llm_mode(rt, llm_mode)
        prepared = prepare_items(items, max_bytes=rt.settings.max_input_bytes)
        tenants.ensure(tenant, runtime=rt)
        run_id = uuid.uuid4()
        rows = [(uuid.uuid4(), key, rt.blobs.shrink_text(tenant, text)) for key, text in prepared]
        rt.store.run_create(
            run_id=run_id,
            tenant_id=tenant,
            agent_name=self.name,
            name=run_name,
            backend=rt.backend.name,
            items=rows,
            max_attempts=self.max_attempts,
            options={
                "concurrency": concurrency,
                "timeout": self.timeout,
                "max_attempts": self.max_attempts,
                **({"llm_mode": mode} if mode != "live" else {}),
            },
            budget_usd=budget,
            entrypoint=self.entrypoint(),
            priority=priority,
        )
        log.info("run %s: %d items for tenant %r", run_id, len(rows), tenant)
        return rt, run_id, [(r[0], r[1]) for r in rows]

    def _execute(
        self,
        rt: Runtime,
        run_id: uuid.UUID,
        tenant: str,
        refs: list[tuple[uuid.UUID, str]],
        concurrency: int,
        progress: bool | None,
        run_name: str | None,
        backend: str | None = None,
    ) -> RunResult:
        """Run recorded items on ``backend`` (by name; default the configured one) and wait."""
        runner = rt.backend if backend is None else rt.backend_named(backend)
        runner.run(
            rt,
            self,
            run_id=run_id,
            tenant_id=tenant,
            items=refs,
            concurrency=concurrency,
            progress=progress,
            run_name=run_name,
        )
        rt.store.run_complete(run_id, tenant)
        return RunResult.load(run_id, tenant)

    def resume(
        self, run_id: uuid.UUID | str, *, concurrency: int | None = None, progress: bool | None = None
    ) -> RunResult:
        """Continue a paused run of this agent in this process: its paused items go back to the queue
        and every queued item runs. Recorded steps and LLM calls are reused, never paid again."""
        from papayya.control import resume_run

        return resume_run(run_id, agent=self, concurrency=concurrency, progress=progress)

    def replay(self, **slice_: Any) -> RunResult:
        """``papayya.replay(...)`` with this agent: e.g. ``enrich.replay(run=RUN, outcome="degraded")``."""
        from papayya.replay import replay

        return replay(agent=self, **slice_)

    def entrypoint(self) -> dict[str, Any]:
        """How replay, resume and generic workers find this agent again (``papayya.registry``).

        Called from ``map()``/``submit()``: it notes whether the batch was started by top-level code
        of the agent's own module, and whether that code is under ``if __name__ == "__main__":``."""
        return registry.entrypoint(self)


def importable_module_name(fn: Callable[..., Any]) -> str:
    """The module an agent is importable from: for a script run as ``python path/to/agents.py``, the
    name ``papayya worker path.to.agents:fn`` imports from the current directory (``agents`` when the
    script lies elsewhere), so runs a script submits are served by workers of the same agent."""
    module: str = fn.__module__
    if module != "__main__":
        return module
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:  # python -m package.module
        return str(spec.name)
    file = getattr(main, "__file__", None)
    if not file:
        return "__main__"  # an interactive session
    path = Path(file).resolve().with_suffix("")
    try:
        return ".".join(path.relative_to(Path.cwd().resolve()).parts)
    except ValueError:
        return path.name


def _item_parts(index: int, raw: Any) -> tuple[Any, Any]:
    if isinstance(raw, Item):
        return raw.id, raw.input
    if isinstance(raw, BaseModel):
        return getattr(raw, "id", None), raw.model_dump(mode="json")
    if isinstance(raw, Mapping):
        return raw.get("id"), dict(raw)
    if is_dataclass(raw) and not isinstance(raw, type):
        return getattr(raw, "id", None), asdict(raw)
    raise InputError(
        f"Item #{index} is a {type(raw).__name__}; pass dicts with an 'id' key, pydantic models with an "
        "id field, or papayya.Item(id, input).",
        index=index,
    )


def prepare_items(items: Iterable[Any], *, max_bytes: int) -> list[tuple[str, str]]:
    """Validate items and return (key, input JSON) pairs. Raises InputError naming the first bad item."""
    if isinstance(items, str | bytes | Mapping):
        raise InputError(
            f"items must be an iterable of items (a list of dicts, say), not a single {type(items).__name__}."
        )
    prepared: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(items):
        key_value, data = _item_parts(index, raw)
        key = validate.item_key(index, key_value)
        if key in seen:
            raise InputError(
                f"Item id {validate.shown(key)} appears twice (#{seen[key]} and #{index}); ids must be "
                "unique within a run.",
                item_key=key,
                index=index,
            )
        seen[key] = index
        try:
            text = validate.input_json(to_jsonable_python(data), key, index)
        except InputError:
            raise  # validate's own refusal (a ValueError too) already names the field and the fix
        except (PydanticSerializationError, TypeError, ValueError, RecursionError) as exc:
            reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            raise InputError(
                f"Item {validate.shown(key)}: its input is not JSON-serialisable ({reason}); convert it "
                "to strings, numbers, lists and dicts (NaN and infinity are not JSON).",
                item_key=key,
                index=index,
            ) from None
        size = len(text.encode())
        if size > max_bytes:
            raise InputError(
                f"Item {validate.shown(key)}: its input is {size:,} bytes, over the {max_bytes:,}-byte "
                "limit; store the large part elsewhere and pass a reference, or raise "
                "PAPAYYA_MAX_INPUT_BYTES.",
                item_key=key,
                index=index,
            )
        prepared.append((key, text))
    if not prepared:
        raise InputError("No items were given; map() needs at least one item.")
    return prepared


@overload
def agent(fn: Callable[..., Any], /) -> Agent: ...


@overload
def agent(
    *,
    name: str | None = None,
    output: type[BaseModel] | None = None,
    checks: Sequence[Check] = (),
    retries: int = 0,
    backoff: float = 1.0,
    backoff_max: float = 60.0,
    timeout: float | None = None,
) -> Callable[[Callable[..., Any]], Agent]: ...


def agent(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Decorate a function that processes one item: ``@agent`` or ``@agent(output=Model, retries=3)``.

    Args:
        name: Stable agent name (default: module.function).
        output: A pydantic model the return value must match; missing, mistyped and undeclared fields
            degrade the item with the field path.
        checks: Callables ``check(output, item)`` returning None when fine, or a reason.
        retries: Extra attempts for retryable errors (transient provider errors, ``TimeoutError``,
            ``ConnectionError``, ``papayya.Retryable``).
        backoff: Base delay in seconds between retries (exponential, jittered); 0 for none.
        backoff_max: Longest delay between retries.
        timeout: Seconds an attempt may take; past it the attempt fails (and may retry).
    """
    if fn is not None:
        return Agent(fn, **options)
    return lambda f: Agent(f, **options)


class AsyncAgent(Agent):
    """An agent whose function is ``async def``."""

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return await self.fn(*args, **kwargs)


class RunHandle:
    """A submitted run: its id and tenant; ``wait()`` for its result."""

    __slots__ = ("run_id", "tenant")

    def __init__(self, run_id: uuid.UUID, tenant: str) -> None:
        self.run_id = run_id
        self.tenant = tenant

    def __repr__(self) -> str:
        return f"<papayya run {self.run_id} of tenant {self.tenant!r}>"

    def __str__(self) -> str:
        return str(self.run_id)

    def wait(self, *, timeout: float | None = None, poll: float = 0.5) -> RunResult:
        """Wait until every item is terminal (or the run is paused), then return its result."""
        from papayya.engine import wait_for_run
        from papayya.runtime import get_runtime

        wait_for_run(get_runtime(), self.run_id, self.tenant, poll=poll, timeout=timeout)
        return RunResult.load(self.run_id, self.tenant)


from papayya.result import RunResult  # noqa: E402  (RunResult imports nothing from here at import time)


def _llm_mode(rt: Runtime, given: str | None) -> str:
    """The run's LLM mode: ``given``, else the setting; batch mode runs on the native engine."""
    from papayya.config import LLM_MODES

    mode = rt.settings.llm_mode if given is None else given
    if mode not in LLM_MODES:
        raise InputError(f"llm_mode {mode!r} is not one of: {', '.join(LLM_MODES)}; use live or batch.")
    if mode == "batch" and rt.backend.name != "native":
        raise InputError(
            f"llm_mode='batch' runs on the native engine (papayya worker), not on the {rt.backend.name} "
            "backend yet; submit with backend native, or leave llm_mode live."
        )
    return mode
