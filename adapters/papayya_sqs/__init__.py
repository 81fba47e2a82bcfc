"""papayya_sqs: accountable items from an SQS queue.

::

    import boto3, papayya_sqs
    from papayya import agent

    @agent
    def enrich(item):
        ...

    consumer = papayya_sqs.Consumer(queue_url, agent=enrich, sqs=boto3.client("sqs"))
    consumer.run()          # long-poll, batch receive, run, delete; SIGTERM drains

Every message is an attempt of an item, run through papayya's one lifecycle: cost attributed to
tenant, run and item, outcome checks, journal (a redelivery does not pay again for recorded calls),
budget gate (a paused tenant's messages are deleted and their items kept ``paused`` until ``papayya
resume``) and failure clusters.

- ``enrich.map(items, tenant="t47")`` with ``PAPAYYA_BACKEND=sqs`` and ``PAPAYYA_SQS_QUEUE_URL`` records
  the run, sends one message per item (ids in attributes, no payload) and waits on the papayya store.
- The team's own ``send_message`` with a tenant (``MessageAttributes=papayya_sqs.attributes("t47")``)
  and a JSON object body records the message as an item of the tenant's intake run for the day.
- Visibility is extended while an item runs; a retry hides the message for the backoff; past the
  queue's ``maxReceiveCount`` the item is failed as dead-lettered and SQS moves the message to the DLQ.
- The consumer runs the reaper: an item whose consumer died is marked ``stalled`` and sent again.

``python -m papayya_sqs MODULE:AGENT`` runs a consumer from the command line. Importing this package
does not need boto3; using the consumer or the backend without it raises one clear error.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from papayya_sqs.message import AGENT, ERROR, ITEM, KEY, RUN, TENANT, attributes

if TYPE_CHECKING:
    from papayya_sqs.backend import SqsBackend
    from papayya_sqs.config import DeadLettered, SqsSettings, SqsUnavailable
    from papayya_sqs.consumer import Consumer, ConsumerStats


def require_boto3() -> None:
    """Raise ImportError with the fix when boto3 is not installed."""
    try:
        import boto3  # noqa: F401
    except ImportError:
        raise ImportError("papayya_sqs needs boto3; install it with: pip install 'papayya[sqs]'") from None


_WHERE = {
    "Consumer": "consumer",
    "ConsumerStats": "consumer",
    "SqsBackend": "backend",
    "SqsSettings": "config",
    "SqsUnavailable": "config",
    "DeadLettered": "config",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'papayya_sqs' has no attribute {name!r}")
    require_boto3()
    value = getattr(importlib.import_module(f"papayya_sqs.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "AGENT",
    "ERROR",
    "ITEM",
    "KEY",
    "RUN",
    "TENANT",
    "Consumer",
    "ConsumerStats",
    "DeadLettered",
    "SqsBackend",
    "SqsSettings",
    "SqsUnavailable",
    "attributes",
    "require_boto3",
]
