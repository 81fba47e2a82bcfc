"""The message headers that carry papayya ids on Celery, and the tenant a publish is stamped with.

A papayya message carries ids, never payloads: its tenant (``papayya_tenant``) and, once the item is
recorded, its item id (``papayya_item``); optionally a key (``papayya_key``) for a message the team's
own code publishes. Every id is validated against the store before anything runs.

This module does not import Celery.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

TENANT = "papayya_tenant"
ITEM = "papayya_item"
KEY = "papayya_key"

_tenant: contextvars.ContextVar[str | None] = contextvars.ContextVar("papayya_celery_tenant", default=None)


def headers(tenant: str, key: str | None = None) -> dict[str, str]:
    """Headers for a message the team's own code publishes: ``task.apply_async((item,),
    headers=papayya_celery.headers("t47", key="doc-17"))``. Without a key, the task id is the key."""
    found = {TENANT: tenant}
    if key is not None:
        found[KEY] = str(key)
    return found


@contextmanager
def tenant(tenant_id: str) -> Iterator[None]:
    """Stamp every task published in this block (``delay``/``apply_async``) with ``tenant_id``::

    with papayya_celery.tenant("t47"):
        enrich.delay({"id": "doc-17", "text": "..."})

    Inside a papayya attempt, tasks published are stamped with the attempt's tenant without this.
    """
    token = _tenant.set(tenant_id)
    try:
        yield
    finally:
        _tenant.reset(token)


def publishing_tenant() -> str | None:
    """The tenant a publish from here is stamped with: this block's, else the running attempt's."""
    explicit = _tenant.get()
    if explicit is not None:
        return explicit
    from papayya.context import current

    ctx = current.get()
    return ctx.tenant_id if ctx is not None else None


__all__ = ["ITEM", "KEY", "TENANT", "headers", "publishing_tenant", "tenant"]
