"""papayya_sqs without a network: reading messages, the messages papayya sends, settings from env."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

import papayya_sqs
from papayya.errors import ConfigError
from papayya.execute import ItemRef
from papayya_sqs.config import SqsSettings, region_of
from papayya_sqs.message import Received, entries, group_id, parse


def received(body: str, attrs: dict[str, Any] | None = None, count: int = 1) -> Received:
    """A message as boto3 returns it; ``attrs`` values are strings or ready MessageAttributes."""
    wrapped = {
        k: v if isinstance(v, dict) else {"DataType": "String", "StringValue": v}
        for k, v in (attrs or {}).items()
    }
    return Received.from_sqs(
        {
            "MessageId": "m-1",
            "ReceiptHandle": "h-1",
            "Body": body,
            "MessageAttributes": wrapped,
            "Attributes": {"ApproximateReceiveCount": str(count)},
        }
    )


def test_a_papayya_message_names_its_item_run_and_tenant() -> None:
    item, run = uuid.uuid4(), uuid.uuid4()
    msg = received(
        '{"id": "k"}', {"papayya_tenant": "t47", "papayya_item": str(item), "papayya_run": str(run)}, 3
    )
    parsed = parse(msg)
    assert parsed.problem is None
    assert parsed.ref == ItemRef(item, "", run, "t47")
    assert msg.receive_count == 3


def test_a_teams_own_message_is_an_intake_item_keyed_by_its_key_or_message_id() -> None:
    keyed = parse(received('{"text": "a"}', papayya_sqs.attributes("t47", key="doc-1")))
    assert (keyed.tenant_id, keyed.key, keyed.input, keyed.ref) == ("t47", "doc-1", {"text": "a"}, None)
    unkeyed = parse(received('{"text": "a"}', papayya_sqs.attributes("t47", agent="enrich")))
    assert (unkeyed.key, unkeyed.agent) == ("m-1", "enrich")


@pytest.mark.parametrize(
    ("body", "attrs", "says"),
    [
        ('{"a": 1}', {}, "has no papayya_tenant attribute"),
        ('{"a": 1}', {"papayya_tenant": "  "}, "has no papayya_tenant attribute"),
        ("not json", {"papayya_tenant": "t"}, "its body is not JSON"),
        ("[1]", {"papayya_tenant": "t"}, "its body is a JSON list, not an object"),
        ('"x"', {"papayya_tenant": "t"}, "its body is a JSON str, not an object"),
        (
            "{}",
            {"papayya_tenant": "t", "papayya_item": "nope", "papayya_run": "x"},
            "are not item and run ids",
        ),
        ("{}", {"papayya_tenant": "t", "papayya_item": str(uuid.uuid4())}, "are not item and run ids"),
    ],
)
def test_a_message_papayya_cannot_run_says_why_in_one_sentence(
    body: str, attrs: dict[str, str], says: str
) -> None:
    parsed = parse(received(body, attrs))
    assert parsed.problem is not None
    assert says in parsed.problem
    assert "m-1" in parsed.problem


def test_sent_messages_carry_ids_and_group_by_tenant_and_fifo_deduplicates_per_send() -> None:
    refs = [ItemRef(uuid.uuid4(), f"k{i}", uuid.uuid4(), "t47") for i in range(3)]
    fair = entries(refs, fifo=False, fair=True, send_id="s1")
    assert [json.loads(e["MessageBody"]) for e in fair] == [{"id": "k0"}, {"id": "k1"}, {"id": "k2"}]
    assert {e["MessageGroupId"] for e in fair} == {"t47"}
    assert all("MessageDeduplicationId" not in e for e in fair)
    assert fair[0]["MessageAttributes"]["papayya_item"]["StringValue"] == str(refs[0].item_id)
    plain = entries(refs, fifo=False, fair=False, send_id="s1")
    assert all("MessageGroupId" not in e for e in plain)
    first = entries(refs, fifo=True, fair=False, send_id="s1")
    again = entries(refs, fifo=True, fair=False, send_id="s1")
    later = entries(refs, fifo=True, fair=False, send_id="s2")
    assert [e["MessageDeduplicationId"] for e in first] == [e["MessageDeduplicationId"] for e in again]
    assert first[0]["MessageDeduplicationId"] != later[0]["MessageDeduplicationId"]
    assert all(len(e["MessageDeduplicationId"]) <= 128 for e in first)


def test_a_tenant_id_sqs_does_not_take_as_a_group_becomes_a_stable_digest() -> None:
    assert group_id("t-47_a.b") == "t-47_a.b"
    odd = group_id("zürich tenant")
    assert odd == group_id("zürich tenant")
    assert odd.startswith("papayya-")
    assert odd.isascii()
    assert len(group_id("x" * 200)) <= 128


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PAPAYYA_SQS_QUEUE_URL", "https://sqs.eu-west-1.amazonaws.com/1/q")
    monkeypatch.setenv("PAPAYYA_SQS_WAIT_SECONDS", "5")
    monkeypatch.setenv("PAPAYYA_SQS_FAIR", "off")
    settings = SqsSettings.from_env(concurrency=3)
    assert (settings.queue_url, settings.wait_seconds, settings.fair, settings.concurrency) == (
        "https://sqs.eu-west-1.amazonaws.com/1/q",
        5,
        False,
        3,
    )
    assert region_of(settings.require_queue()) == "eu-west-1"


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("PAPAYYA_SQS_WAIT_SECONDS", "30", "from 0 to 20"),
        ("PAPAYYA_SQS_VISIBILITY_TIMEOUT", "soon", "from 1 to 43200"),
        ("PAPAYYA_SQS_CONCURRENCY", "0", "from 1 to 4096"),
        ("PAPAYYA_SQS_FAIR", "maybe", "must be on or off"),
    ],
)
def test_a_bad_setting_is_one_sentence(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, says: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=says):
        SqsSettings.from_env()


def test_without_a_queue_url_the_error_says_which_variable_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PAPAYYA_SQS_QUEUE_URL", raising=False)
    with pytest.raises(ConfigError, match="set PAPAYYA_SQS_QUEUE_URL"):
        SqsSettings.from_env().require_queue()
    with pytest.raises(ConfigError, match="set PAPAYYA_SQS_QUEUE_URL"):
        papayya_sqs.Consumer(agent=papayya_sqs_agent(), sqs=object())


def papayya_sqs_agent() -> Any:
    from papayya import agent

    @agent
    def noop(item: Any) -> None:
        pass

    return noop


def test_the_sqs_backend_is_registered_through_the_entry_point() -> None:
    from papayya.plugins import Hooks, make_plugin_manager

    backends = Hooks(make_plugin_manager()).register_backends()
    assert "sqs" in backends
    assert backends["sqs"]().name == "sqs"
