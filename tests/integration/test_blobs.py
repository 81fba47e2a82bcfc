"""Large inputs, outputs and recorded steps go to the blob store (a local directory, or S3) and come
back transparently: to the agent, to a retry's journal, to a from-journal replay and to `items show`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

import papayya
from papayya import agent, blobs, run
from papayya.runtime import Runtime
from tests.integration.test_sqs import AWS_ENV, moto_endpoint  # noqa: F401  (the session's moto server)

BIG = "lorem ipsum " * 500  # ~6 KB of JSON text
attempts_seen: list[int] = []


@agent(retries=1, backoff=0)
def summarise(item: papayya.Item) -> dict[str, Any]:
    notes = run.step("notes")(lambda: {"notes": item.input["text"].upper()})
    attempts_seen.append(run.attempt)
    if item.input.get("fail_once") and run.attempt == 1:
        raise ConnectionError("the provider hung up")  # retryable: the next attempt reads the journal
    return {"words": len(item.input["text"].split()), "notes": notes["notes"]}


def _stored(rt: Runtime, run_id: Any) -> dict[str, Any]:
    with psycopg.connect(rt.store.url) as conn:
        item = conn.execute(
            "SELECT i.item_id, n.input, i.output FROM papayya.items i "
            "JOIN papayya.item_inputs n USING (item_id, tenant_id) WHERE i.run_id = %s",
            (run_id,),
        ).fetchone()
        assert item is not None
        step = conn.execute("SELECT result FROM papayya.steps WHERE item_id = %s", (item[0],)).fetchone()
    assert step is not None
    return {"item_id": item[0], "input": item[1], "output": item[2], "step": step[0]}


def _run_big(rt: Runtime, tenant: str, **extra: Any) -> papayya.RunResult:
    attempts_seen.clear()
    result = summarise.map([{"id": "doc-1", "text": BIG, **extra}], tenant=tenant)
    assert result.counts["succeeded"] == 1
    return result


def test_large_values_live_in_the_local_blob_store_and_read_back_everywhere(
    rt: Runtime, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAPAYYA_BLOB_THRESHOLD_BYTES", "1000")
    # Given an item whose input, recorded step and output are each over the threshold
    result = _run_big(rt, tenant, fail_once=True)

    # Then the database holds references, and the blobs sit under the tenant's prefix
    stored = _stored(rt, result.run_id)
    for value in (stored["input"], stored["output"], stored["step"]):
        assert blobs.is_ref(value), value
    files = list((Path(rt.settings.home) / "blobs" / blobs.tenant_prefix(tenant)).rglob("*"))
    assert len([f for f in files if f.is_file()]) == 3
    # And the agent saw the real input; its retry got the recorded step back from the blob store
    assert attempts_seen == [1, 2]
    # And `items show` (the store detail, expanded) shows the values, not the references
    detail = rt.blobs.expand_item(rt.store.item_detail(stored["item_id"]))
    assert detail["input"]["text"] == BIG
    assert detail["output"] == {"words": 1000, "notes": BIG.upper()}
    assert detail["steps"][0]["result"] == {"notes": BIG.upper()}

    # And a from-journal replay a week later answers from the blob-stored journal
    replayed = papayya.replay(item=stored["item_id"], from_journal=True)
    assert replayed.counts["succeeded"] == 1
    again = rt.blobs.expand_item(rt.store.item_detail(replayed.items()[0].item_id))
    assert again["output"] == detail["output"]


def test_small_values_stay_in_postgresql(rt: Runtime, tenant: str) -> None:
    result = summarise.map([{"id": "tiny", "text": "a b c"}], tenant=tenant)
    stored = _stored(rt, result.run_id)
    assert stored["input"] == {"id": "tiny", "text": "a b c"}
    assert not (Path(rt.settings.home) / "blobs").exists()


def test_large_values_go_to_s3(
    rt: Runtime,
    tenant: str,
    moto_endpoint: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import boto3

    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket="papayya-blobs")
    monkeypatch.setenv("PAPAYYA_BLOB_URL", "s3://papayya-blobs/prod")
    monkeypatch.setenv("PAPAYYA_S3_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("PAPAYYA_BLOB_THRESHOLD_BYTES", "1000")

    result = _run_big(rt, tenant)

    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="papayya-blobs")["Contents"]]
    assert len(keys) == 3
    assert all(k.startswith(f"prod/{blobs.tenant_prefix(tenant)}/") for k in keys)
    stored = _stored(rt, result.run_id)
    body = s3.get_object(Bucket="papayya-blobs", Key=keys[0])["Body"].read()
    assert json.loads(body)  # the value's JSON text, content-addressed
    assert rt.blobs.expand(tenant, stored["input"])["text"] == BIG


def test_a_bad_blob_setting_is_one_sentence(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAPAYYA_BLOB_URL", "ftp://somewhere")
    with pytest.raises(papayya.ConfigError, match="is not a file:// or s3:// URL"):
        summarise.map([{"id": "a", "text": "x"}], tenant="t")


def test_tenant_prefixes_are_safe_paths() -> None:
    assert blobs.tenant_prefix("..") == "t-%2E%2E"
    assert "/" not in blobs.tenant_prefix("a/../../etc")
    assert blobs.tenant_prefix("acme") == "t-acme"
