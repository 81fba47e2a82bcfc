"""papayya_temporal without a server: the stamp header, settings, activity names and what an activity
answers Temporal for each outcome."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from temporalio import activity
from temporalio.api.common.v1 import Payload
from temporalio.exceptions import ApplicationError

from papayya import ConfigError, agent
from papayya.execute import Concluded
from papayya_temporal import HEADER, Stamp, TemporalSettings, activity_name, current_stamp, headers, stamped
from papayya_temporal import activity as temporal_activity


def test_a_stamp_survives_the_header_round_trip() -> None:
    stamp = Stamp(tenant_id="t47", run_id="r", item_id="i", key="acme.com", mode="map")
    carried = headers.write({}, stamp)
    assert set(carried) == {HEADER}
    assert headers.read(carried) == stamp
    assert headers.write({"other": Payload()}, None) == {"other": Payload()}


@pytest.mark.parametrize(
    "data",
    [b"not json", b"[1, 2]", b'{"run_id": "r"}', b'{"tenant_id": 7}', b'{"tenant_id": "t", "item_id": 3}'],
)
def test_a_header_that_is_not_a_stamp_is_ignored(data: bytes) -> None:
    assert headers.read({HEADER: Payload(data=data)}) is None


def test_an_unknown_mode_falls_back_to_item() -> None:
    assert headers.read({HEADER: Payload(data=b'{"tenant_id": "t", "mode": "x"}')}) == Stamp("t")


def test_stamped_sets_the_stamp_for_the_block_only() -> None:
    with stamped("t47", run_id=1, item_id=2, key="k") as stamp:
        assert current_stamp.get() == stamp == Stamp("t47", "1", "2", "k")
    assert current_stamp.get() is None


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert TemporalSettings.from_env() == TemporalSettings()
    monkeypatch.setenv("PAPAYYA_TEMPORAL_ADDRESS", "temporal.internal:7233")
    monkeypatch.setenv("PAPAYYA_TEMPORAL_NAMESPACE", "prod")
    monkeypatch.setenv("PAPAYYA_TEMPORAL_TASK_QUEUE", "enrich")
    monkeypatch.setenv("PAPAYYA_TEMPORAL_HEARTBEAT_TIMEOUT", "5")
    got = TemporalSettings.from_env()
    assert (got.address, got.namespace, got.task_queue, got.heartbeat_timeout) == (
        "temporal.internal:7233",
        "prod",
        "enrich",
        5.0,
    )


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("PAPAYYA_TEMPORAL_ADDRESS", "localhost", "is not host:port"),
        ("PAPAYYA_TEMPORAL_ADDRESS", "localhost:99999", "is not host:port"),
        ("PAPAYYA_TEMPORAL_ACTIVITY_TIMEOUT", "soon", "is not a positive number of seconds"),
        ("PAPAYYA_TEMPORAL_HEARTBEAT_TIMEOUT", "0", "is not a positive number of seconds"),
    ],
)
def test_a_bad_setting_is_one_sentence(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, says: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=says):
        TemporalSettings.from_env()


def test_the_activity_name_of_an_agent() -> None:
    @activity.defn(name="enrich")
    @agent
    async def enrich(item: Any) -> Any:
        return item

    @agent
    def plain(item: Any) -> Any:
        return item

    @agent
    @activity.defn
    def upside_down(item: Any) -> Any:
        return item

    assert activity_name(enrich) == "enrich"
    assert temporal_activity.agent_of(enrich) is enrich
    with pytest.raises(ConfigError, match="is not a Temporal activity"):
        activity_name(plain)
    with pytest.raises(ConfigError, match=r"put @activity\.defn above @agent"):
        activity_name(upside_down)


def _ctx() -> Any:
    return SimpleNamespace(item=SimpleNamespace(id="acme.com"), attempt=2, run_id="run-1")


@pytest.mark.parametrize(
    ("concluded", "item_answer", "map_answer"),
    [
        (Concluded("succeeded", True, cost_usd=Decimal("0.01")), {"x": 1}, "succeeded"),
        (Concluded("degraded", True), {"x": 1}, "degraded"),
        (Concluded("failed", True), "papayya.Failed", "failed"),
        (Concluded("paused", False), "papayya.Paused", "paused"),
    ],
)
def test_what_an_activity_answers_for_each_outcome(
    concluded: Concluded, item_answer: Any, map_answer: str
) -> None:
    ctx = _ctx()
    if isinstance(item_answer, str):
        with pytest.raises(ApplicationError) as err:
            temporal_activity._answer(concluded, None, Stamp("t"), ctx, KeyError("x"))
        assert err.value.type == item_answer
        assert err.value.non_retryable
    else:
        assert temporal_activity._answer(concluded, item_answer, Stamp("t"), ctx, None) == item_answer
    mapped = temporal_activity._answer(concluded, {"x": 1}, Stamp("t", mode="map"), ctx, None)
    assert mapped["status"] == map_answer


def test_a_retry_asks_temporal_to_retry_after_papayyas_backoff() -> None:
    with pytest.raises(ApplicationError) as err:
        temporal_activity._answer(
            Concluded("queued", False, retry_in=2.5),
            None,
            Stamp("t", mode="map"),
            _ctx(),
            ConnectionError("x"),
        )
    assert err.value.type == "papayya.Retry"
    assert not err.value.non_retryable
    assert err.value.next_retry_delay is not None
    assert err.value.next_retry_delay.total_seconds() == 2.5
