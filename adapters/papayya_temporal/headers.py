"""The papayya stamp: which tenant, run and item a Temporal call belongs to, carried in a header.

A stamp is set in a ContextVar (``stamped(...)`` on the client, restored from the header inside a
workflow or an activity) and written into the ``papayya`` header of every call that leaves: workflow
starts and signals from the client, activities, child workflows and signals from a workflow. Only ids
travel, never item data; an activity checks them against the store before anything runs.

This module imports neither papayya's core nor anything non-deterministic, so workflow code running
in Temporal's sandbox may import it (passed through).
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from temporalio.api.common.v1 import Payload

HEADER = "papayya"
_ENCODING = b"json/plain"

# What an activity does with an item stamp: "item" runs the agent and answers like the function would
# (its output; a failure or a pause raises); "map" (papayya's own MapItems workflow) answers a small
# status record instead, so outputs never enter the workflow's history.
MODES = ("item", "map")


@dataclass(frozen=True, slots=True)
class Stamp:
    """Ids that travel with a Temporal call. ``item_id`` is set for calls that run one item."""

    tenant_id: str
    run_id: str | None = None
    item_id: str | None = None
    key: str | None = None
    mode: str = "item"

    def to_payload(self) -> Payload:
        data = {k: v for k, v in asdict(self).items() if v is not None}
        text = json.dumps(data, separators=(",", ":"), sort_keys=True)
        return Payload(metadata={"encoding": _ENCODING}, data=text.encode())

    @classmethod
    def from_payload(cls, payload: Payload) -> Stamp | None:
        """The stamp in ``payload``; None when it is not one (a header written by someone else)."""
        try:
            data = json.loads(payload.data)
        except ValueError:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("tenant_id"), str):
            return None
        fields = ("run_id", "item_id", "key")
        if any(data.get(f) is not None and not isinstance(data[f], str) for f in fields):
            return None
        mode = data.get("mode", "item")
        return cls(
            tenant_id=data["tenant_id"],
            run_id=data.get("run_id"),
            item_id=data.get("item_id"),
            key=data.get("key"),
            mode=mode if mode in MODES else "item",
        )


current_stamp: contextvars.ContextVar[Stamp | None] = contextvars.ContextVar("papayya_stamp", default=None)


def read(headers: Mapping[str, Payload]) -> Stamp | None:
    """The stamp carried by ``headers``, if any."""
    payload = headers.get(HEADER)
    return None if payload is None else Stamp.from_payload(payload)


def write(headers: Mapping[str, Payload], stamp: Stamp | None) -> Mapping[str, Payload]:
    """``headers`` with ``stamp`` added (unchanged when there is none)."""
    if stamp is None:
        return headers
    return {**headers, HEADER: stamp.to_payload()}


@contextmanager
def stamped(
    tenant: str,
    *,
    run_id: object | None = None,
    item_id: object | None = None,
    key: str | None = None,
) -> Iterator[Stamp]:
    """Stamp every Temporal call made inside the block (client, workflow) with these ids.

    Example::

        with papayya_temporal.stamped("t47", run_id=run, item_id=item, key="acme.com"):
            await client.execute_workflow(Enrich.run, id="enrich-acme", task_queue="enrich")

    Activities that are agents then run that item through papayya (the ids must be of a recorded
    item of that tenant; anything else is refused).
    """
    stamp = Stamp(
        tenant_id=tenant,
        run_id=None if run_id is None else str(run_id),
        item_id=None if item_id is None else str(item_id),
        key=key,
    )
    token = current_stamp.set(stamp)
    try:
        yield stamp
    finally:
        current_stamp.reset(token)


__all__ = ["HEADER", "Stamp", "current_stamp", "read", "stamped", "write"]
