"""The ``Backend`` protocol and the two kinds papayya ships: the native engine (``map()`` runs a worker
in this process, ``submit()`` leaves the run to ``papayya worker`` processes) and the base of backends
whose workers live elsewhere (Celery, Temporal, SQS, plugins)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol
from uuid import UUID

from papayya.engine.waiting import progress_for, wait_for_run
from papayya.engine.worker import BACKEND, Worker
from papayya.execute import ItemRef

if TYPE_CHECKING:
    from papayya.agent import Agent
    from papayya.runtime import Runtime

log = logging.getLogger("papayya.engine")


class Backend(Protocol):
    """What runs a recorded run's items. Backends register through ``papayya_register_backends``."""

    name: str

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
        """Run every item of the run and return when each is terminal or the run is paused."""

    def submit(
        self,
        rt: Runtime,
        agent: Agent,
        *,
        run_id: UUID,
        tenant_id: str,
        items: Sequence[tuple[UUID, str]],
        concurrency: int,
    ) -> None:
        """Hand every item of the (recorded) run to the backend's workers and return at once."""


class PublishingBackend:
    """The base of backends whose workers live elsewhere (a broker's workers, a Temporal worker, SQS
    consumers): ``run()`` publishes every item and waits on the store, ``submit()`` publishes and
    returns, ``redrive()`` publishes again the stalled items the reaper hands back, by agent. A
    subclass provides ``publish``."""

    name: str

    def publish(self, rt: Runtime, agent_name: str, refs: Sequence[ItemRef]) -> None:
        """Hand ``refs`` (items of runs of agent ``agent_name``) to the backend's workers."""
        raise NotImplementedError

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
        """Publish every item, then wait on the store until each is terminal or the run is paused.
        Concurrency is the backend's workers', not ``concurrency``."""
        self.publish(rt, agent.name, [ItemRef(item_id, key, run_id, tenant_id) for item_id, key in items])
        bar = progress_for(rt, agent, run_id, tenant_id, total=len(items), label=run_name, enabled=progress)
        with bar:
            wait_for_run(rt, run_id, tenant_id, progress=bar)

    def submit(
        self,
        rt: Runtime,
        agent: Agent,
        *,
        run_id: UUID,
        tenant_id: str,
        items: Sequence[tuple[UUID, str]],
        concurrency: int,
    ) -> None:
        """Publish every item and return at once."""
        self.publish(rt, agent.name, [ItemRef(item_id, key, run_id, tenant_id) for item_id, key in items])

    def redrive(self, rt: Runtime, refs: list[ItemRef]) -> None:
        """Publish again the items the reaper marked ``stalled`` (their worker was lost), by agent."""
        runs = sorted({(r.run_id, r.tenant_id) for r in refs})
        rows = rt.store.fetch_all(
            "run_agents", {"run_ids": [r for r, _ in runs], "tenant_ids": [t for _, t in runs]}
        )
        agents = {r["run_id"]: r["agent_name"] for r in rows}
        by_agent: dict[str, list[ItemRef]] = {}
        for ref in refs:
            if ref.run_id in agents:
                by_agent.setdefault(agents[ref.run_id], []).append(ref)
        for agent_name, group in by_agent.items():
            try:
                self.publish(rt, agent_name, group)
            except Exception as exc:
                log.error("cannot re-drive %d stalled item(s) of agent %s: %s", len(group), agent_name, exc)
                continue
            log.warning("re-drove %d stalled item(s) of agent %s on %s", len(group), agent_name, self.name)


class NativeBackend:
    """The native engine: ``map()`` runs a worker in this process for its run; ``submit()`` leaves
    the run to ``papayya worker`` processes (a notification wakes them)."""

    name = BACKEND

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
        bar = progress_for(rt, agent, run_id, tenant_id, total=len(items), label=run_name, enabled=progress)
        with bar:
            worker = Worker(
                rt,
                [agent],
                concurrency=concurrency,
                run_ids=[run_id],
                until_done=True,
                progress=bar,
                poll=0.5,
                backend=self.name,
            )
            try:
                worker.run()
            except BaseException:
                # Ctrl-C or a crash of papayya itself: leave the run resumable rather than "running".
                rt.store.runs_pause(tenant_id, run_id, "interrupted: the process stopped")
                raise
            finally:
                rt.budgets.give_back(run_id)

    def submit(
        self,
        rt: Runtime,
        agent: Agent,
        *,
        run_id: UUID,
        tenant_id: str,
        items: Sequence[tuple[UUID, str]],
        concurrency: int,
    ) -> None:
        rt.store.notify_work(agent.name)
