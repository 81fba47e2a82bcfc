"""Every outcome a user can meet, through a real map() on a real store."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from pydantic import BaseModel

import papayya
from papayya import Reason, agent, hookimpl, run
from papayya.runtime import Runtime

log = logging.getLogger("user.code")


class Enriched(BaseModel):
    domain: str
    size: int


def _reasons(result: papayya.RunResult) -> dict[str, set[tuple[str, str | None]]]:
    return {i.key: {(r["code"], r["path"]) for r in i.reasons} for i in result.items(outcome="degraded")}


def test_each_degraded_signal_names_its_reason(rt: Runtime, tenant: str) -> None:
    @papayya.retriever(name="docs")
    def docs(query: str) -> list[str]:
        return [] if query == "empty" else ["a doc"]

    def default_on_error(text: str) -> int:
        try:
            return int(text)
        except ValueError:
            log.exception("cannot parse %r", text)
            return 0

    @agent(output=Enriched)
    def enrich(item: papayya.Item) -> Any:
        kind = item["kind"]
        run.retrieve("empty" if kind == "retrieval" else "full", retriever="docs")
        run.tool("lookup")(lambda: None if kind == "tool" else {"ok": 1})
        run.record_llm_call(
            provider="openai",
            model="gpt-4o-mini",
            input_tokens=100,
            output_tokens=20,
            stop_reason="length" if kind == "length" else "stop",
        )
        size = default_on_error("x" if kind == "swallowed" else "5")
        if kind == "empty":
            return None
        if kind == "hallucinated":
            return {"domain": "d", "sise": size}
        if kind == "user":
            run.degrade("low_confidence", message="model said it was unsure")
        return {"domain": "d", "size": size}

    kinds = ["ok", "retrieval", "tool", "length", "swallowed", "empty", "hallucinated", "user"]
    result = enrich.map([{"id": k, "kind": k} for k in kinds], tenant=tenant)

    assert result.counts == {"succeeded": 1, "degraded": 7, "failed": 0}
    reasons = _reasons(result)
    assert reasons["retrieval"] == {("retrieval_empty", "docs")}
    assert reasons["tool"] == {("tool_returned_none", "lookup")}
    assert reasons["length"] == {("llm_stop_reason", "length")}
    assert reasons["swallowed"] == {("swallowed_exception", "test_outcomes_e2e.default_on_error:ValueError")}
    assert reasons["empty"] == {("empty_output", None)}
    assert reasons["hallucinated"] == {("schema.extra_field", "sise"), ("schema.missing_field", "size")}
    assert reasons["user"] == {("low_confidence", None)}


def test_an_escaping_exception_fails_with_fingerprint_frame_and_category(rt: Runtime, tenant: str) -> None:
    def parse(item: papayya.Item) -> str:
        return str(item["body"])

    @agent
    def enrich(item: papayya.Item) -> str:
        return parse(item)

    result = enrich.map([{"id": f"k{i}"} for i in range(3)] + [{"id": "good", "body": "b"}], tenant=tenant)
    assert result.counts == {"succeeded": 1, "degraded": 0, "failed": 3}
    assert len(result.top_failures) == 1
    cluster = result.top_failures[0]
    assert (cluster["n"], cluster["type"], cluster["category"]) == (3, "KeyError", "user")
    assert cluster["frame"] == "test_outcomes_e2e.py:parse"
    assert cluster["pattern"] == "<str>"
    detail = rt.store.item_detail(result.items(outcome="failed")[0].item_id)
    assert detail["attempts"] == 1  # a KeyError in user code is not retried by default
    assert "KeyError" in detail["error"]["traceback"]


def test_a_check_or_plugin_that_raises_never_fails_the_item(rt: Runtime, tenant: str) -> None:
    class Noisy:
        @hookimpl
        def papayya_inspect_output(self, ctx: Any, output: Any) -> list[Reason]:
            raise RuntimeError("inspector bug")

        @hookimpl
        def papayya_outcome_recorded(self, ctx: Any, outcome: str, reasons: list[Reason]) -> None:
            raise RuntimeError("observer bug")

    class Picky:
        @hookimpl
        def papayya_inspect_output(self, ctx: Any, output: Any) -> list[Reason]:
            return [Reason(code="too_short", path="summary")] if len(output["summary"]) < 3 else []

    def broken_check(output: Any, item: Any) -> None:
        raise ValueError("check bug")

    rt.pm.register(Noisy())
    rt.pm.register(Picky())

    @agent(checks=[broken_check])
    def summarise(item: papayya.Item) -> dict[str, str]:
        return {"summary": item["text"]}

    result = summarise.map([{"id": "a", "text": "long enough"}, {"id": "b", "text": "x"}], tenant=tenant)
    assert result.counts == {"succeeded": 1, "degraded": 1, "failed": 0}
    assert _reasons(result) == {"b": {("too_short", "summary")}}


def test_observers_see_attempts_outcomes_and_llm_calls(rt: Runtime, tenant: str) -> None:
    seen: list[tuple[str, Any]] = []

    class Recorder:
        @hookimpl
        def papayya_attempt_started(self, ctx: Any) -> None:
            seen.append(("started", ctx.item.id))

        @hookimpl
        def papayya_llm_call_recorded(self, call: Any) -> None:
            seen.append(("llm", (call.model, call.cost_usd is not None)))

        @hookimpl
        def papayya_attempt_finished(self, ctx: Any, status: str, reasons: list[Reason]) -> None:
            seen.append(("finished", status))

        @hookimpl
        def papayya_outcome_recorded(self, ctx: Any, outcome: str, reasons: list[Reason]) -> None:
            seen.append(("outcome", outcome))

    rt.pm.register(Recorder())

    @agent
    def one(item: papayya.Item) -> str:
        run.record_llm_call(provider="openai", model="gpt-4o-mini", input_tokens=10, output_tokens=1)
        return "ok"

    one.map([{"id": "x"}], tenant=tenant)
    assert seen == [
        ("started", "x"),
        ("llm", ("gpt-4o-mini", True)),
        ("finished", "succeeded"),
        ("outcome", "succeeded"),
    ]


def test_run_outside_an_agent_says_how_to_use_it() -> None:
    with pytest.raises(RuntimeError, match="only available inside an @agent function"):
        _ = run.tenant
