"""What a papayya SQS message carries, and what a received message is.

A message papayya sends carries ids, never payloads: message attributes ``papayya_tenant``,
``papayya_run`` and ``papayya_item`` (the input lives in the papayya store); its body is
``{"id": KEY}`` for people reading the queue. A message the team's own code sends carries a tenant
(``papayya_tenant``), optionally a key (``papayya_key``, else the SQS message id) and an agent
(``papayya_agent``, for a consumer serving several), and its JSON object body is the item's input.
Every id is validated against the store before anything runs.

This module imports neither boto3 nor papayya's core at import time (the plugin hook loads it).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from uuid import UUID

if TYPE_CHECKING:
    from papayya.execute import ItemRef

TENANT = "papayya_tenant"
RUN = "papayya_run"
ITEM = "papayya_item"
KEY = "papayya_key"
AGENT = "papayya_agent"
ERROR = "papayya_error"

_GROUP = re.compile(r"^[!-~]{1,128}$")  # what SQS accepts in MessageGroupId


def attributes(tenant: str, key: str | None = None, agent: str | None = None) -> dict[str, Any]:
    """``MessageAttributes`` for a message the team's own code sends::

        sqs.send_message(QueueUrl=url, MessageBody=json.dumps(doc),
                         MessageAttributes=papayya_sqs.attributes("t47", key=doc["id"]))

    Without a key, the SQS message id is the item's key (a redelivery is the same item)."""
    found = {TENANT: _string(tenant)}
    if key is not None:
        found[KEY] = _string(str(key))
    if agent is not None:
        found[AGENT] = _string(agent)
    return found


def group_id(tenant_id: str) -> str:
    """The ``MessageGroupId`` of a tenant's messages: the tenant id, or a digest of it when it has
    characters SQS does not accept there."""
    if _GROUP.match(tenant_id):
        return tenant_id
    return "papayya-" + hashlib.sha256(tenant_id.encode()).hexdigest()[:40]


def entries(refs: Sequence[ItemRef], *, fifo: bool, fair: bool, send_id: str) -> list[dict[str, Any]]:
    """``send_message_batch`` entries for ``refs``: ids in attributes; the tenant as message group on
    FIFO queues (and on standard queues when ``fair``); on FIFO queues a deduplication id made of the
    item id and ``send_id`` (one per send, so a retried batch is deduplicated but a later re-send, by
    resume or a re-drive, is not)."""
    found = []
    for n, ref in enumerate(refs):
        entry: dict[str, Any] = {
            "Id": str(n),
            "MessageBody": json.dumps({"id": ref.key}),
            "MessageAttributes": {
                TENANT: _string(ref.tenant_id),
                RUN: _string(str(ref.run_id)),
                ITEM: _string(str(ref.item_id)),
            },
        }
        if fifo or fair:
            entry["MessageGroupId"] = group_id(ref.tenant_id)
        if fifo:
            entry["MessageDeduplicationId"] = f"{ref.item_id.hex}-{send_id}"
        found.append(entry)
    return found


@dataclass
class Received:
    """One received message: what the consumer needs of SQS's dict."""

    message_id: str
    receipt_handle: str
    body: str
    attributes: dict[str, str]
    receive_count: int
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_sqs(cls, m: Mapping[str, Any]) -> Received:
        attrs = {
            name: str(value.get("StringValue", ""))
            for name, value in (m.get("MessageAttributes") or {}).items()
            if isinstance(value, Mapping) and "StringValue" in value
        }
        system = m.get("Attributes") or {}
        try:
            count = int(system.get("ApproximateReceiveCount", 1))
        except (TypeError, ValueError):
            count = 1
        return cls(
            message_id=str(m["MessageId"]),
            receipt_handle=str(m["ReceiptHandle"]),
            body=str(m.get("Body", "")),
            attributes=attrs,
            receive_count=count,
            raw=dict(m),
        )


@dataclass(frozen=True)
class Parsed:
    """What a message asks for: an item papayya recorded (``ref``), a new item from the team's own
    code (``intake``: tenant, key, input), or nothing runnable (``problem``, one sentence)."""

    tenant_id: str | None = None
    ref: ItemRef | None = None
    key: str | None = None
    input: Mapping[str, Any] | None = None
    agent: str | None = None
    problem: str | None = None


def parse(msg: Received, default_tenant: str | None = None) -> Parsed:
    """Read a received message; never raises (what is wrong is in ``problem``). A message of the team's
    own code that names no tenant belongs to ``default_tenant`` (``PAPAYYA_DEFAULT_TENANT``) when set."""
    from papayya.execute import ItemRef

    attrs = msg.attributes
    tenant = attrs.get(TENANT, "").strip() or None
    agent = attrs.get(AGENT) or None
    if tenant is None and default_tenant and ITEM not in attrs and RUN not in attrs:
        tenant = default_tenant
    if tenant is None:
        return Parsed(
            problem=f"message {msg.message_id} has no {TENANT} attribute, so its cost and outcome have no "
            f"owner; send it with MessageAttributes=papayya_sqs.attributes(TENANT), or set "
            "PAPAYYA_DEFAULT_TENANT to adopt such messages under one tenant",
            agent=agent,
        )
    if ITEM in attrs or RUN in attrs:
        try:
            item_id, run_id = UUID(attrs.get(ITEM, "")), UUID(attrs.get(RUN, ""))
        except ValueError:
            return Parsed(
                tenant_id=tenant,
                problem=f"message {msg.message_id}: its {ITEM}/{RUN} attributes "
                f"({attrs.get(ITEM)!r}, {attrs.get(RUN)!r}) are not item and run ids",
            )
        return Parsed(tenant_id=tenant, ref=ItemRef(item_id, "", run_id, tenant), agent=agent)
    try:
        body = json.loads(msg.body)
    except ValueError as exc:
        return Parsed(
            tenant_id=tenant,
            problem=f"message {msg.message_id}: its body is not JSON ({exc}); send the item's input as "
            "a JSON object",
        )
    if not isinstance(body, dict):
        return Parsed(
            tenant_id=tenant,
            problem=f"message {msg.message_id}: its body is a JSON {type(body).__name__}, not an object; "
            "send the item's input as a JSON object",
        )
    key = attrs.get(KEY) or msg.message_id
    return Parsed(tenant_id=tenant, key=key, input=body, agent=agent)


def _string(value: str) -> dict[str, str]:
    return {"DataType": "String", "StringValue": value}


__all__ = [
    "AGENT",
    "ERROR",
    "ITEM",
    "KEY",
    "RUN",
    "TENANT",
    "Parsed",
    "Received",
    "attributes",
    "entries",
    "group_id",
    "parse",
]
