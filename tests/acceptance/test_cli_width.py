"""Every table the CLI prints fits a 100-column terminal, and the ids in it stay whole (copyable).

The runs are made with long keys, a long tenant name, long reasons and long error messages; each
command is run with ``COLUMNS=100`` as a terminal of that width sets it.
"""

from __future__ import annotations

import re
import uuid

from papayya import Item, agent, run
from papayya.runtime import Runtime
from tests.acceptance.test_cli import ok_text, papayya_all

WIDTH = 100
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def test_tables_fit_a_100_column_terminal_and_keep_ids_whole(rt: Runtime, cli_env: dict[str, str]) -> None:
    tenant = f"northwind-traders-international-{uuid.uuid4().hex[:8]}"

    @agent(name="enrichment.pipeline.classify_and_summarise_documents")
    def classify(item: Item) -> dict[str, str]:
        run.record_llm_call(
            provider="openai", model="gpt-4o-mini-2024-07-18", input_tokens=1200, output_tokens=300
        )
        if item.id.endswith("3"):
            raise ValueError(
                f"the upstream document store answered 502 for document {item.id} after three tries; "
                "the page could not be read"
            )
        if item.id.endswith("5"):
            run.degrade(
                "retrieval_returned_too_few_passages_for_a_grounded_answer",
                path="sections.summary.grounding",
                message="only one passage of the three required was found",
            )
        return {"summary": "ok"}

    keys = [f"customer-invoice-2026-11-{n:04d}-{'x' * 20}-{n}" for n in range(12)]
    result = classify.map([{"id": k} for k in keys], tenant=tenant)
    run_id = str(result.run_id)
    an_item = str(result.items()[0].item_id)
    env = {**cli_env, "COLUMNS": str(WIDTH)}
    commands = [
        ["runs", "list", "--tenant", tenant],
        ["runs", "show", run_id],
        ["items", "list", run_id],
        ["items", "show", an_item],
        ["failures", run_id],
        ["failures", "--tenant", tenant],
        ["tenants", "list"],
        ["tenants", "show", tenant],
        ["costs", "--by", "model", "--tenant", tenant],
        ["costs", "--by", "run", "--tenant", tenant],
    ]
    for args, printed in zip(commands, papayya_all(env, *commands), strict=True):
        text = ok_text(printed)
        too_wide = [line for line in text.splitlines() if len(line) > WIDTH]
        assert not too_wide, f"papayya {' '.join(args)}: {len(too_wide)} lines over {WIDTH}:\n" + "\n".join(
            too_wide[:5]
        )
        # an id the table shows is never split across lines: every UUID-looking start is a whole UUID
        for line in text.splitlines():
            for start in re.finditer(r"[0-9a-f]{8}-[0-9a-f]{4}-", line):
                assert UUID.match(line, start.start()), f"papayya {' '.join(args)}: split id in {line!r}"
