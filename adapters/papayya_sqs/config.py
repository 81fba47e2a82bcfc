"""Where the ``sqs`` backend and consumer find SQS: ``PAPAYYA_SQS_*`` environment variables.

==================================  ==============  =================================================
variable                            default         meaning
==================================  ==============  =================================================
``PAPAYYA_SQS_QUEUE_URL``           (required)      the queue items are sent to and consumed from
``PAPAYYA_SQS_ENDPOINT_URL``        AWS             another SQS endpoint (moto, localstack)
``PAPAYYA_SQS_REGION``              ``AWS_REGION``  the region (else ``AWS_DEFAULT_REGION``, else the
                                                    region in the queue URL)
``PAPAYYA_SQS_WAIT_SECONDS``        ``20``          long-poll wait of one receive (0-20)
``PAPAYYA_SQS_VISIBILITY_TIMEOUT``  the queue's     seconds a received message stays hidden; the
                                                    consumer extends it while the item runs
``PAPAYYA_SQS_CONCURRENCY``         ``10``          items one consumer runs at once
``PAPAYYA_SQS_FAIR``                ``on``          ``on``: messages of a standard queue carry
                                                    ``MessageGroupId`` = tenant (SQS fair queues);
                                                    ``off``: they do not. FIFO queues always do.
==================================  ==============  =================================================

Credentials come from boto3's usual chain (environment, profile, instance role).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from typing import Any

from papayya.errors import ConfigError, PapayyaError

QUEUE_URL = "PAPAYYA_SQS_QUEUE_URL"


class SqsUnavailable(PapayyaError):
    """SQS cannot be reached, or refused a request (credentials, permissions, a missing queue)."""


class DeadLettered(PapayyaError):
    """An item's message used up the queue's ``maxReceiveCount``: SQS moves it to the dead-letter queue
    and papayya fails the item (never silently gone)."""


@dataclass(frozen=True)
class SqsSettings:
    queue_url: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    wait_seconds: int = 20
    visibility_timeout: int | None = None
    concurrency: int = 10
    fair: bool = True

    @classmethod
    def from_env(cls, **explicit: Any) -> SqsSettings:
        """Read the ``PAPAYYA_SQS_*`` variables (``explicit`` values win); ConfigError (one sentence) on
        a bad value."""
        env = os.environ
        fair_raw = env.get("PAPAYYA_SQS_FAIR", "on").strip().lower() or "on"
        if fair_raw not in ("on", "off", "true", "false", "1", "0"):
            raise ConfigError(f"PAPAYYA_SQS_FAIR={fair_raw!r} must be on or off.")
        found = cls(
            queue_url=env.get(QUEUE_URL, "").strip() or None,
            endpoint_url=env.get("PAPAYYA_SQS_ENDPOINT_URL", "").strip() or None,
            region=(
                env.get("PAPAYYA_SQS_REGION", "").strip()
                or env.get("AWS_REGION", "").strip()
                or env.get("AWS_DEFAULT_REGION", "").strip()
                or None
            ),
            wait_seconds=_int("PAPAYYA_SQS_WAIT_SECONDS", 20, 0, 20) or 0,
            visibility_timeout=_int("PAPAYYA_SQS_VISIBILITY_TIMEOUT", None, 1, 43200),
            concurrency=_int("PAPAYYA_SQS_CONCURRENCY", 10, 1, 4096) or 10,
            fair=fair_raw in ("on", "true", "1"),
        )
        return replace(found, **{k: v for k, v in explicit.items() if v is not None})

    def require_queue(self) -> str:
        if not self.queue_url:
            raise ConfigError(
                f"The sqs backend does not know which queue to use; set {QUEUE_URL} to the queue's URL "
                "(e.g. https://sqs.us-east-1.amazonaws.com/123456789012/enrich)."
            )
        return self.queue_url


def region_of(queue_url: str) -> str | None:
    """The region in an AWS queue URL (``https://sqs.REGION.amazonaws.com/...``), if any."""
    found = re.match(r"https?://sqs[.-]([a-z0-9-]+)\.amazonaws\.com", queue_url)
    return found.group(1) if found else None


def make_client(settings: SqsSettings, queue_url: str | None = None) -> Any:
    """A boto3 SQS client for ``settings``; ConfigError (one sentence) when no region is known."""
    import boto3

    region = settings.region or region_of(queue_url or settings.queue_url or "")
    if region is None:
        region = boto3.session.Session().region_name
    if region is None and settings.endpoint_url is not None:
        region = "us-east-1"  # a local endpoint (moto, localstack) accepts any region
    if region is None:
        raise ConfigError("No AWS region for SQS; set PAPAYYA_SQS_REGION (or AWS_REGION), e.g. us-east-1.")
    return boto3.client("sqs", region_name=region, endpoint_url=settings.endpoint_url)


def _int(name: str, default: int | None, low: int, high: int) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ConfigError(f"{name}={raw!r} must be a whole number from {low} to {high}.")
    return value


__all__ = ["QUEUE_URL", "DeadLettered", "SqsSettings", "SqsUnavailable", "make_client", "region_of"]
