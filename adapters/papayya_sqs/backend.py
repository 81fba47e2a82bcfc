"""The ``sqs`` backend: ``map()``, ``submit()``, ``papayya resume`` and ``papayya replay`` send one SQS
message per item (ids in its attributes, no payload; ``send_message_batch``) and read progress from
the papayya store; the reaper's stalled items are sent again the same way (``redrive``).

The queue is ``PAPAYYA_SQS_QUEUE_URL`` (see ``papayya_sqs.config``), or, in a consumer's process, the
consumer's own queue. When the messages cannot be sent, the run is paused (its items stay ``queued``)
and the error says so: ``papayya resume RUN`` sends them once SQS answers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING
from uuid import UUID

from papayya.engine import PublishingBackend
from papayya.errors import ConfigError
from papayya.execute import ItemRef
from papayya_sqs.config import SqsSettings, SqsUnavailable, make_client
from papayya_sqs.consumer import BACKEND
from papayya_sqs.queue import Queue

if TYPE_CHECKING:
    from papayya.agent import Agent
    from papayya.runtime import Runtime

log = logging.getLogger("papayya.sqs")


class SqsBackend(PublishingBackend):
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

    def serves(self, queue_url: str, agents: Iterable[str] | None) -> bool:
        """Whether this backend sends ``agents``' items (every agent's, for ``None``) to ``queue_url``
        and no other agent's (a consumer's reaper)."""
        if self._queue is None or self._queue.url != queue_url:
            return False
        if agents is None:
            return self.agents is None
        return self.agents is not None and self.agents >= set(agents)

    def publish(self, rt: Runtime, agent_name: str, refs: Sequence[ItemRef]) -> None:
        """Send one message per item (``send_message_batch``; ids in attributes)."""
        self.queue.send(refs)
        log.info("sent %d item(s) of agent %s to %s", len(refs), agent_name, self.queue.url)

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
        with _paused_when_unsent(rt, run_id, tenant_id):
            super().run(
                rt,
                agent,
                run_id=run_id,
                tenant_id=tenant_id,
                items=items,
                concurrency=concurrency,
                progress=progress,
                run_name=run_name,
            )

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
        with _paused_when_unsent(rt, run_id, tenant_id):
            super().submit(
                rt, agent, run_id=run_id, tenant_id=tenant_id, items=items, concurrency=concurrency
            )

    def redrive(self, rt: Runtime, refs: list[ItemRef]) -> None:
        """Send again the items the reaper marked ``stalled`` (their consumer died); in a consumer's
        process, only the items of the agents it serves (other consumers send theirs); a consumer
        serving any agent sends every stalled item of the sqs backend."""
        if self.agents is not None:
            runs = sorted({(r.run_id, r.tenant_id) for r in refs})
            rows = rt.store.fetch_all(
                "run_agents", {"run_ids": [r for r, _ in runs], "tenant_ids": [t for _, t in runs]}
            )
            mine = {r["run_id"] for r in rows if r["agent_name"] in self.agents}
            refs = [r for r in refs if r.run_id in mine]
        if refs:
            super().redrive(rt, refs)


@contextmanager
def _paused_when_unsent(rt: Runtime, run_id: UUID, tenant_id: str) -> Iterator[None]:
    """When a run's messages cannot be sent, pause the run (its items stay queued) and say how to send
    them again."""
    try:
        yield
    except (SqsUnavailable, ConfigError) as exc:
        rt.store.runs_pause(tenant_id, run_id, f"could not send its items to SQS: {exc}")
        raise type(exc)(
            f"{exc} Run {run_id} is paused with its items queued; `papayya resume {run_id}` sends them "
            "once SQS answers."
        ) from exc


__all__ = ["SqsBackend"]
