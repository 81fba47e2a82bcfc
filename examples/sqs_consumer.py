"""An SQS consumer made accountable: the agent the team already has, run by ``papayya_sqs.Consumer``.

Against AWS (credentials and region as boto3 finds them) or a local endpoint (moto, localstack)::

    export PAPAYYA_SQS_ENDPOINT_URL=http://127.0.0.1:5000      # only for a local endpoint
    python -m moto.server -p 5000 &                            # e.g. a moto server
    eval "$(python -m examples.sqs_consumer setup)"            # a queue + dead-letter queue; exports the URL
    python -m examples.sqs_consumer consume                    # terminal 1: the consumer (Ctrl-C drains)
    PAPAYYA_BACKEND=sqs python -m examples.sqs_consumer map     # terminal 2: a run of 20 items, waited on

``python -m examples.sqs_consumer send`` sends the same items the way the team's code always has
(``send_message`` with a JSON body) with a tenant attribute; each becomes an item of the tenant's
intake run for the day. Then ``papayya runs list``, ``papayya items list RUN``, ``papayya failures RUN``.
Consumer and sender must share the papayya store (``PAPAYYA_DATABASE_URL``, or run both from this
directory for the embedded one).

The "LLM" is a simulation (no network): most items succeed, a few come back without a summary
(degraded) and a few raise (retried, then failed, clustered by fingerprint).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from typing import Any

import boto3

import papayya_sqs  # papayya
from papayya import agent, run  # papayya (run: only to flag a degraded output)


def _roll(key: str) -> float:
    return int(hashlib.blake2b(key.encode(), digest_size=4).hexdigest(), 16) / 2**32


def simulated_llm(text: str) -> str:
    """Stand-in for a model call: deterministic per input."""
    roll = _roll(text)
    if roll < 0.05:
        raise TimeoutError("the model did not answer in time")
    return "" if roll < 0.12 else f"summary of {text}"


@agent(name="enrich", retries=1, backoff=0.5)  # papayya
def enrich(item: Any) -> dict[str, Any]:
    """Summarise one document (the function the team already had)."""
    summary = simulated_llm(item["text"])
    if not summary:
        run.degrade("the model returned an empty summary", path="summary")
        return {"summary": None}
    return {"summary": summary, "words": len(summary.split())}


ITEMS = [{"id": f"doc-{n:03d}", "text": f"document {n}"} for n in range(20)]


def client() -> Any:
    region = os.environ.get("PAPAYYA_SQS_REGION") or os.environ.get("AWS_REGION") or "us-east-1"
    return boto3.client("sqs", region_name=region, endpoint_url=os.environ.get("PAPAYYA_SQS_ENDPOINT_URL"))


def setup() -> None:
    """Create the queue and its dead-letter queue (three receives, then the DLQ); print the export."""
    sqs = client()
    dlq = sqs.create_queue(QueueName="papayya-example-dlq")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": 3})
    url = sqs.create_queue(
        QueueName="papayya-example", Attributes={"VisibilityTimeout": "30", "RedrivePolicy": policy}
    )["QueueUrl"]
    print(f"export PAPAYYA_SQS_QUEUE_URL={url}")


def main(argv: list[str]) -> None:
    command = argv[0] if argv else "map"
    tenant = os.environ.get("TENANT", "t47")
    if command == "setup":
        setup()
    elif command == "consume":
        consumer = papayya_sqs.Consumer(agent=enrich, sqs=client())  # papayya
        print(f"consuming {consumer.queue.url}; Ctrl-C drains", file=sys.stderr)
        print(consumer.run(), file=sys.stderr)
    elif command == "send":
        sqs, url = client(), os.environ["PAPAYYA_SQS_QUEUE_URL"]
        for item in ITEMS:
            sqs.send_message(
                QueueUrl=url,
                MessageBody=json.dumps(item),
                MessageAttributes=papayya_sqs.attributes(tenant, key=item["id"]),  # papayya
            )
        print(f"sent {len(ITEMS)} messages for tenant {tenant}; see them with `papayya runs list`")
    elif command == "map":
        print(enrich.map(ITEMS, tenant=tenant))
    else:
        sys.exit("usage: python -m examples.sqs_consumer setup|consume|send|map")


if __name__ == "__main__":
    main(sys.argv[1:])
