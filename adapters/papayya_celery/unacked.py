"""The unacked watch: on a Redis broker, the messages a dead worker had taken go back to their queue
within ``PAPAYYA_CELERY_UNACKED_SECONDS`` (default 120), not after Redis's visibility timeout (an hour).

kombu's Redis transport keeps every message delivered to a worker and not yet acknowledged in the
``unacked`` hash, indexed by delivery time in ``unacked_index``, and puts it back in its queue only once
it is older than the transport's ``visibility_timeout`` (3600 s by default). A worker SIGKILLed whole
leaves there every message it had prefetched (``worker_prefetch_multiplier`` x concurrency) but not
started; their items are still ``queued``, hold no lease, and papayya's reaper cannot see them.

Every papayya worker on Redis runs this watch in its main process. Every quarter of the bound (at most
30 s) it:

1. marks the messages this worker holds (prefetched, waiting for a countdown, or running) as alive: their
   ``unacked_index`` score becomes now, on Redis's clock. A live worker's messages never look old, however
   long they wait their turn, so nothing it holds is taken from it (nor restored by kombu's own timeout);
2. puts back in its queue, with kombu's own ``restore_by_tag``, each papayya message that no worker has
   marked for the whole bound: the worker that took it is gone. A message naming an item is put back
   only while that item is ``queued`` (a ``running`` item is the reaper's, through its lease; a finished
   one needs nothing); a message naming only a tenant (the team's ``delay()``) is put back too, its key
   making it the same item. Messages without papayya headers are the team's, left to kombu.

Messages still in the queue (a backlog waiting its turn) are never touched. Should a live worker's message
be put back anyway (its main process froze for the whole bound), papayya's claim is the fence: one attempt
holds an item at a time, and the other copy is dropped once the item is done.
"""

from __future__ import annotations

import json
import logging
import threading
import weakref
from typing import TYPE_CHECKING, Any
from uuid import UUID

from papayya_celery import message as H

if TYPE_CHECKING:
    from celery import Celery

    from papayya.runtime import Runtime

log = logging.getLogger("papayya.celery")

LIMIT = 1000  # old entries looked at per pass; the rest wait for the next pass


class UnackedWatch:
    """Keeps this worker's unacknowledged messages marked alive and restores those of dead workers (see
    the module docstring). ``hold`` is called for every message the worker receives."""

    def __init__(self, app: Celery, rt: Runtime, bound: float | None = None) -> None:
        self.app = app
        self.rt = rt
        self.bound = bound if bound is not None else rt.settings.celery_unacked_seconds
        self.interval = max(0.2, min(self.bound / 4, 30.0))
        self._lock = threading.Lock()
        self._held: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: Any = None

    def hold(self, request: Any) -> None:
        """This worker received ``request`` (a Celery ``Request``): keep its message marked alive until
        it is acknowledged. The entry goes when the request is collected."""
        tag = getattr(getattr(request, "message", None), "delivery_tag", None)
        if tag is not None:
            with self._lock:
                self._held[str(tag)] = request

    def held(self) -> list[str]:
        """Delivery tags of the messages this worker holds and has not acknowledged."""
        with self._lock:
            requests = list(self._held.items())
        return [tag for tag, request in requests if not getattr(request, "acknowledged", False)]

    def start(self) -> UnackedWatch | None:
        """Start watching; None (nothing started) when the app's broker is not Redis."""
        conn = self.app.connection_for_write()
        driver = conn.transport.driver_type
        conn.release()
        if driver != "redis":
            return None
        self._thread = threading.Thread(target=self._loop, name="papayya-unacked", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._close()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception as exc:  # Redis or the store is away: next pass
                log.warning("unacked watch: pass failed (%s); retrying in %.1fs", exc, self.interval)
                self._close()

    def _channel(self) -> Any:
        if self._conn is None:
            self._conn = self.app.connection_for_write()
        return self._conn.default_channel

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.release()
            except Exception:
                log.debug("unacked watch: closing the broker connection failed", exc_info=True)

    def tick(self) -> int:
        """One pass: mark this worker's messages alive, restore the dead workers' papayya messages older
        than the bound; return how many were restored."""
        channel = self._channel()
        client = channel.client
        index = channel.unacked_index_key
        seconds, micros = client.time()
        now = float(seconds) + float(micros) / 1e6
        held = self.held()
        if held:
            client.zadd(index, dict.fromkeys(held, now), xx=True)
        old = client.zrange(index, 0, now - self.bound, byscore=True, offset=0, num=LIMIT)
        if not old:
            return 0
        due = self._due(client, channel.unacked_key, [_text(tag) for tag in old])
        for tag in due:
            channel.qos.restore_by_tag(tag, client=client)
        if due:
            log.warning(
                "unacked watch: %d papayya message(s) taken by a worker that is gone (unacknowledged, "
                "unheld for over %gs) put back in their queue",
                len(due),
                self.bound,
            )
        return len(due)

    def _due(self, client: Any, unacked_key: str, tags: list[str]) -> list[str]:
        """Of ``tags`` (entries no live worker marked for the bound), those to restore: papayya messages
        whose item is still ``queued``, or that name only a tenant."""
        due: list[str] = []
        named: dict[str, tuple[UUID, str]] = {}
        pipe = client.pipeline()  # HGET each: kombu prefixes its keys (global_keyprefix) for HGET, not HMGET
        for tag in tags:
            pipe.hget(unacked_key, tag)
        for tag, raw in zip(tags, pipe.execute(), strict=True):
            headers = _headers(raw)
            tenant = headers.get(H.TENANT)
            if not tenant:
                continue  # not a papayya message: the team's, left to kombu's visibility timeout
            item = headers.get(H.ITEM)
            if not item:
                due.append(tag)  # intake: its key makes a second delivery the same item
                continue
            try:
                named[tag] = (UUID(str(item)), str(tenant))
            except ValueError:
                continue  # a forged header: the worker drops it whenever it arrives
        if named:
            rows = self.rt.store.fetch_all(
                "celery_items_queued",
                {
                    "item_ids": [item for item, _ in named.values()],
                    "tenant_ids": [tenant for _, tenant in named.values()],
                },
            )
            queued = {row["item_id"] for row in rows}
            due += [tag for tag, (item, _) in named.items() if item in queued]
        return due


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _headers(raw: Any) -> dict[str, Any]:
    """The headers of an ``unacked`` hash entry (``[message, exchange, routing_key]`` as JSON)."""
    if raw is None:
        return {}  # acknowledged since it was listed
    try:
        message = json.loads(_text(raw))[0]
        headers = message.get("headers") or {}
    except (ValueError, TypeError, IndexError, AttributeError):
        return {}
    return headers if isinstance(headers, dict) else {}


__all__ = ["UnackedWatch"]
