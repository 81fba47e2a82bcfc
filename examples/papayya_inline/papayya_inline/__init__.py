"""An example third-party papayya plugin: the ``inline`` backend.

Installed like any package (``pip install ./examples/papayya_inline``), it registers itself through
the ``papayya`` entry-point group; ``PAPAYYA_BACKEND=inline`` (or ``[tool.papayya] backend =
"inline"``) selects it, and agents do not change. It runs a run's items one at a time in the calling
thread — handy under a debugger — through papayya's one lifecycle (``execute.begin`` → ``invoke`` →
``conclude``), so outcomes, costs, journal, budgets and clusters are exactly the native engine's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from uuid import UUID

import papayya
from papayya import execute
from papayya.engine import progress_for
from papayya.execute import ItemRef
from papayya.tenants import overrides_map

if TYPE_CHECKING:
    from papayya.agent import Agent
    from papayya.runtime import Runtime


class InlineBackend:
    """Runs every item in the calling thread, one after the other."""

    name = "inline"

    def run(
        self,
        rt: Runtime,
        agent: Agent,
        *,
        run_id: UUID,
        tenant_id: str,
        items: Sequence[tuple[UUID, str]],
        concurrency: int,
        progress: bool | None,
        run_name: str | None = None,
    ) -> None:
        tenant = rt.store.tenant_get(tenant_id)
        period = tenant["budget_period"] if tenant else "month"
        overrides = overrides_map(tenant_id, rt)
        queue = [ItemRef(item_id, key, run_id, tenant_id) for item_id, key in items]
        with progress_for(
            rt, agent, run_id, tenant_id, total=len(queue), label=run_name, enabled=progress
        ) as bar:
            while queue:
                ref = queue.pop(0)
                ctx = execute.begin(
                    rt, agent, ref, backend=self.name, price_overrides=overrides, budget_period=period
                )
                if ctx is None:
                    if execute.refusal(rt, ref) == "paused":
                        return  # the run paused: the rest stay queued for `papayya resume`
                    continue
                output, error = execute.invoke(ctx)
                result = execute.conclude(ctx, output=output, error=error)
                if result.retry_in is not None:  # the agent's retry policy wants another attempt
                    time.sleep(result.retry_in)
                    queue.append(ref)
                elif result.terminal:
                    bar.advance(result.status, result.cost_usd)
                elif result.status == "paused":
                    return

    def submit(self, rt: Runtime, agent: Agent, **kwargs: Any) -> None:
        raise papayya.ConfigError("The inline backend runs items in the caller; use map(), not submit().")


@papayya.hookimpl
def papayya_register_backends(register: Callable[[str, Callable[[], Any]], None]) -> None:
    register("inline", InlineBackend)
