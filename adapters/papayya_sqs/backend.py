"""The ``sqs`` backend: ``map()``, ``submit()``, ``papayya resume`` and ``papayya replay`` send one SQS
message per item (ids in its attributes, no payload; ``send_message_batch``) and read progress from
the papayya store; the reaper's stalled items are sent again the same way (``redrive``).

The queue is ``PAPAYYA_SQS_QUEUE_URL`` (see ``papayya_sqs.config``), or, in a consumer's process, the
consumer's own queue. When the messages cannot be sent, the run is paused (its items stay ``queued``)
and the error says so: ``papayya resume RUN`` sends them once SQS answers.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING
from uuid import UUID

from papayya.engine import progress_for, wait_for_run
from papayya.errors import ConfigError
from papayya.execute import ItemRef
from papayya_sqs.config import SqsSettings, SqsUnavailable, make_client
from papayya_sqs.consumer import BACKEND
from papayya_sqs.queue import Queue

if TYPE_CHECKING:
    from papayya.agent import Agent
    from papayya.runtime import Runtime

log = logging.getLogger("papayya.sqs")


class SqsBackend:
    """Sends a recorded run's items to an SQS queue; ``papayya_sqs.Consumer`` processes run them."""

    name = BACKEND

    def __init__(self, queue: Queue | None = None, *, agents: Iterable[str] | None = None) -> None:
        self._queue = queue
        self.agents = None if agents is None else frozenset(agents)

    @property
    def queue(self) -> Queue:
        if self._queue is None:
            settings = SqsSettings.from_env()
            url = settings.require_queue()
            self._queue = Queue(url, make_client(settings, url), fair=settings.fair)
        return self._queue

    def serves(self, queue_url: str, agents: Iterable[str]) -> bool:
        """Whether this backend sends ``agents``' items to ``queue_url`` (a consumer's reaper)."""
        return (
            self._queue is not None
            and self._queue.url == queue_url
            and self.agents is not None
            and self.agents >= set(agents)
        )

    def send(self, rt: Runtime, run_id: UUID, tenant_id: str, refs: Sequence[ItemRef]) -> None:
        """Send one message per item; when that fails, pause the run (its items stay queued) and raise
        SqsUnavailable saying how to send them again."""
        try:
            self.queue.send(refs)
        except (SqsUnavailable, ConfigError) as exc:
            rt.store.runs_pause(tenant_id, run_id, f"could not send its items to SQS: {exc}")
            raise type(exc)(
                f"{exc} Run {run_id} is paused with its items queued; `papayya resume {run_id}` sends them "
                "once SQS answers."
            ) from exc
        log.info("run %s: sent %d item(s) to %s", run_id, len(refs), self.queue.url)

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
        """Send every item, then wait on the store until each is terminal or the run is paused.
        Concurrency is the consumers' (``Consumer(concurrency=...)``), not ``concurrency``."""
        self.send(rt, run_id, tenant_id, [ItemRef(item_id, key, run_id, tenant_id) for item_id, key in items])
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
        """Send every item and return at once."""
        self.send(rt, run_id, tenant_id, [ItemRef(item_id, key, run_id, tenant_id) for item_id, key in items])

    def redrive(self, rt: Runtime, refs: list[ItemRef]) -> None:
        """Send again the items the reaper marked ``stalled`` (their consumer died); in a consumer's
        process, only the items of the agents it serves."""
        runs = sorted({(r.run_id, r.tenant_id) for r in refs})
        rows = rt.store.fetch_all(
            "sqs_run_agents", {"run_ids": [r for r, _ in runs], "tenant_ids": [t for _, t in runs]}
        )
        agents = {r["run_id"]: r["agent_name"] for r in rows}
        by_agent: dict[str, list[ItemRef]] = defaultdict(list)
        for ref in refs:
            name = agents.get(ref.run_id)
            if name is not None and (self.agents is None or name in self.agents):
                by_agent[name].append(ref)
        for name, group in by_agent.items():
            self.queue.send(group)
            log.warning("re-drove %d stalled item(s) of agent %s to %s", len(group), name, self.queue.url)


__all__ = ["SqsBackend"]
