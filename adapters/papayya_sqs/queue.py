"""One SQS queue as papayya uses it: its settings (visibility, redrive policy, FIFO), batched sends,
deletes and visibility changes whose per-entry failures are looked at, and dead-lettering.

boto3's errors are translated here, once, into :class:`SqsUnavailable` (one sentence).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from papayya.execute import ItemRef
from papayya_otel import propagation as trace_context
from papayya_sqs import message as M
from papayya_sqs.config import SqsUnavailable

log = logging.getLogger("papayya.sqs")

BATCH = 10  # the most entries SQS takes in one batch call
MAX_VISIBILITY = 43200  # 12 hours: SQS's ceiling


@dataclass(frozen=True)
class QueueInfo:
    """What papayya reads of a queue's attributes."""

    visibility_timeout: int
    max_receive_count: int | None
    dead_letter_arn: str | None
    fifo: bool


@contextmanager
def translated(what: str, url: str) -> Iterator[None]:
    """Turn boto3's errors into SqsUnavailable, one sentence naming the queue and the fix."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code, text = error.get("Code", "?"), error.get("Message", str(exc))
        raise SqsUnavailable(
            f"SQS refused to {what} on {url} ({code}: {text}); check the queue URL, the region and the "
            "credentials' permissions."
        ) from exc
    except BotoCoreError as exc:
        raise SqsUnavailable(
            f"Cannot {what} on {url} ({exc}); check that SQS (or PAPAYYA_SQS_ENDPOINT_URL) answers and "
            "that credentials are configured."
        ) from exc


MAX_ATTRIBUTES = 10  # SQS's ceiling of message attributes per message


def _add_trace_context(attributes: dict[str, Any], carried: Mapping[str, Any]) -> None:
    """Add the trace context (``traceparent``, ``tracestate``, ``baggage``) as String attributes, as many
    as fit under SQS's ten (papayya's ids take three; ``traceparent`` comes first)."""
    for name in sorted(carried, key=lambda n: n != "traceparent"):
        value = carried[name]
        if len(attributes) >= MAX_ATTRIBUTES:
            log.debug("no room for the %s message attribute; sent without it", name)
            continue
        if isinstance(value, str) and value and name not in attributes:
            attributes[name] = {"DataType": "String", "StringValue": value}


class Queue:
    """A boto3 SQS client bound to one queue URL. Thread-safe (boto3 clients are)."""

    def __init__(self, url: str, client: Any, *, fair: bool = True) -> None:
        self.url = url
        self.client = client
        self.fair = fair
        self._info: QueueInfo | None = None
        self._dlq_url: str | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Queue({self.url})"

    def _call(self, what: str, method: str, **kwargs: Any) -> Any:
        with translated(what, self.url):
            return getattr(self.client, method)(QueueUrl=self.url, **kwargs)

    @property
    def info(self) -> QueueInfo:
        """The queue's visibility timeout, redrive policy and type (read once)."""
        if self._info is None:
            got = self._call(
                "read the queue's attributes",
                "get_queue_attributes",
                AttributeNames=["VisibilityTimeout", "RedrivePolicy", "FifoQueue"],
            ).get("Attributes", {})
            policy: dict[str, Any] = {}
            if got.get("RedrivePolicy"):
                try:
                    policy = json.loads(got["RedrivePolicy"])
                except ValueError:
                    log.warning("queue %s: unreadable RedrivePolicy %r", self.url, got["RedrivePolicy"])
            max_receive = policy.get("maxReceiveCount")
            self._info = QueueInfo(
                visibility_timeout=int(got.get("VisibilityTimeout", 30)),
                max_receive_count=int(max_receive) if max_receive else None,
                dead_letter_arn=policy.get("deadLetterTargetArn"),
                fifo=str(got.get("FifoQueue", "")).lower() == "true" or self.url.endswith(".fifo"),
            )
        return self._info

    # -- sending ----------------------------------------------------------------------------------

    def send(self, refs: Sequence[ItemRef], *, attempts: int = 4) -> None:
        """Send one message per item (batches of ten); entries SQS failed are sent again, a few times,
        then SqsUnavailable names how many could not be sent."""
        info = self.info
        send_id = uuid.uuid4().hex[:16]
        carried = trace_context.inject({})  # the consumer's attempt is a child of the current span
        for start in range(0, len(refs), BATCH):
            pending = M.entries(refs[start : start + BATCH], fifo=info.fifo, fair=self.fair, send_id=send_id)
            for entry in pending:
                _add_trace_context(entry["MessageAttributes"], carried)
            for attempt in range(attempts):
                try:
                    answer = self._call("send messages", "send_message_batch", Entries=pending)
                except SqsUnavailable as exc:
                    if self._refuses_groups(exc, info):
                        pending = [{k: v for k, v in e.items() if k != "MessageGroupId"} for e in pending]
                        continue
                    if attempt + 1 == attempts:
                        raise
                    time.sleep(0.2 * 2**attempt)
                    continue
                failed = {f["Id"]: f for f in answer.get("Failed", [])}
                if not failed:
                    break
                sender = [f for f in failed.values() if f.get("SenderFault")]
                if sender:  # sending again will not help
                    raise SqsUnavailable(
                        f"SQS refused {len(sender)} message(s) for {self.url}: "
                        f"{sender[0].get('Code')}: {sender[0].get('Message')}"
                    )
                pending = [e for e in pending if e["Id"] in failed]
                time.sleep(0.2 * 2**attempt)
            else:
                raise SqsUnavailable(
                    f"SQS did not take {len(pending)} message(s) for {self.url} after {attempts} tries."
                )

    def _refuses_groups(self, exc: SqsUnavailable, info: QueueInfo) -> bool:
        """An endpoint without fair queues refuses MessageGroupId on a standard queue: stop sending it."""
        if info.fifo or not self.fair or "MessageGroupId" not in str(exc):
            return False
        log.warning("queue %s does not take MessageGroupId (no fair queues here); sending without", self.url)
        self.fair = False
        return True

    # -- receiving --------------------------------------------------------------------------------

    def receive(self, limit: int, wait_seconds: int, visibility: int | None) -> list[M.Received]:
        kwargs: dict[str, Any] = {
            "MaxNumberOfMessages": max(1, min(BATCH, limit)),
            "WaitTimeSeconds": wait_seconds,
            "MessageAttributeNames": ["All"],
            "MessageSystemAttributeNames": ["ApproximateReceiveCount", "MessageGroupId"],
        }
        if visibility is not None:
            kwargs["VisibilityTimeout"] = visibility
        answer = self._call("receive messages", "receive_message", **kwargs)
        return [M.Received.from_sqs(m) for m in answer.get("Messages", [])]

    def delete(self, handles: Sequence[tuple[str, str]]) -> dict[str, str]:
        """Delete messages by (id, receipt handle); return {id: why} of those SQS did not delete."""
        return self._batch(
            "delete messages",
            "delete_message_batch",
            [{"Id": i, "ReceiptHandle": h} for i, h in handles],
        )

    def change_visibility(self, changes: Sequence[tuple[str, str, float]]) -> dict[str, str]:
        """Set (id, receipt handle, seconds) visibilities; return {id: why} of those that failed."""
        return self._batch(
            "change message visibility",
            "change_message_visibility_batch",
            [
                {"Id": i, "ReceiptHandle": h, "VisibilityTimeout": max(0, min(MAX_VISIBILITY, math.ceil(s)))}
                for i, h, s in changes
            ],
        )

    def _batch(self, what: str, method: str, entries: list[dict[str, Any]]) -> dict[str, str]:
        failed: dict[str, str] = {}
        for start in range(0, len(entries), BATCH):
            chunk = entries[start : start + BATCH]
            try:
                answer = self._call(what, method, Entries=chunk)
            except SqsUnavailable as exc:
                failed.update({e["Id"]: str(exc) for e in chunk})
                continue
            for f in answer.get("Failed", []):
                failed[f["Id"]] = f"{f.get('Code')}: {f.get('Message')}"
        return failed

    # -- the dead-letter queue --------------------------------------------------------------------

    def dead_letter_url(self) -> str | None:
        """The URL of the queue's dead-letter queue (from its RedrivePolicy), or None."""
        arn = self.info.dead_letter_arn
        if arn is None:
            return None
        with self._lock:
            if self._dlq_url is None:
                parts = arn.split(":")
                name, account = parts[-1], parts[-2] if len(parts) >= 6 else None
                kwargs: dict[str, Any] = {"QueueName": name}
                if account:
                    kwargs["QueueOwnerAWSAccountId"] = account
                with translated("find the dead-letter queue", self.url):
                    self._dlq_url = str(self.client.get_queue_url(**kwargs)["QueueUrl"])
            return self._dlq_url

    def move_to_dead_letter(self, msg: M.Received, reason: str) -> bool:
        """Send ``msg`` (body and attributes, plus ``papayya_error`` = ``reason``) to the dead-letter
        queue, then delete it here; False when the queue has no dead-letter queue."""
        target = self.dead_letter_url()
        if target is None:
            return False
        attrs = dict(msg.raw.get("MessageAttributes") or {})
        if len(attrs) < 10:  # SQS takes ten attributes at most; the reason then lives in the log only
            attrs[M.ERROR] = {"DataType": "String", "StringValue": reason[:1000]}
        kwargs: dict[str, Any] = {"QueueUrl": target, "MessageBody": msg.body or "(empty)"}
        if attrs:
            kwargs["MessageAttributes"] = attrs
        if target.endswith(".fifo"):
            group = (msg.raw.get("Attributes") or {}).get("MessageGroupId") or "papayya-dead-letters"
            kwargs.update(MessageGroupId=group, MessageDeduplicationId=msg.message_id)
        with translated("send a message to the dead-letter queue", target):
            self.client.send_message(**kwargs)
        failed = self.delete([(msg.message_id, msg.receipt_handle)])
        if failed:
            log.warning(
                "message %s was copied to the dead-letter queue but not deleted here (%s)",
                msg.message_id,
                failed[msg.message_id],
            )
        return True


def retrying(fn: Callable[[], Any], what: str, *, tries: int = 3) -> Any:
    """Call ``fn``; on SqsUnavailable wait and try again, up to ``tries`` times."""
    for attempt in range(tries):
        try:
            return fn()
        except SqsUnavailable as exc:
            if attempt + 1 == tries:
                raise
            log.warning("%s failed (%s); trying again", what, exc)
            time.sleep(0.5 * 2**attempt)
    return None  # pragma: no cover


__all__ = ["BATCH", "MAX_VISIBILITY", "Queue", "QueueInfo", "retrying", "translated"]
