"""The dashboard's layout in a real headless Chromium, at the widths people open it at (1000, 1400 and
1920 px): nothing spills sideways out of the page, every "Replay cluster" button can be seen and
clicked (the clusters table never slides under the card beside it, however long a cluster's label),
a budget meter changes colour near and over its budget, and the outcome bar's legend names every
segment of the bar with its colour and its count.

The browser and the dashboard server are those of tests/acceptance/test_ui.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

import papayya
from papayya import agent, run
from papayya.runtime import Runtime
from papayya.ui.charts import METER_OVER_AT, METER_WARN_AT, meter_level
from tests.acceptance.test_ui import WAIT_MS, Dashboard, browser  # noqa: F401  (browser: a fixture)
from tests.integration.test_ui_api import Seeded, fake_llm, seed

WIDTHS = (1000, 1400, 1920)

# A failure message and a degradation with no place to break a line: the labels that used to push the
# clusters table (and its buttons) under the next card.
LONG_ERROR = "the_upstream_enrichment_service_answered_with_a_payload_whose_shape_nobody_expected_at_all"
LONG_REASON = "response_did_not_match_the_schema_expected_by_the_enrichment_step"
LONG_PATH = "result.sections.paragraphs.citations.source_document_identifier_of_the_cited_work"


@agent(name="ui-layout-long-labels")
def long_labels(item: papayya.Item) -> Any:
    n = int(item.id[1:])
    run.llm("answer", provider="openai", model="gpt-4o-mini", max_tokens=20)(fake_llm, prompt=item.id)
    if n % 3 == 0:
        raise LookupError(LONG_ERROR)
    if n % 3 == 1:
        run.degrade(LONG_REASON, path=LONG_PATH, message="the model left the field out")
    return {"id": item.id}


@dataclass
class Layout:
    seeded: Seeded
    long: UUID  # a finished run whose clusters have long unbreakable labels


@pytest.fixture
def layout(rt: Runtime, tenant: str) -> Layout:
    seeded = seed(tenant)
    long = long_labels.map([{"id": f"l{n:02d}"} for n in range(9)], tenant=tenant)
    return Layout(seeded, long.run_id)


@pytest.fixture(params=WIDTHS, ids=[f"{w}px" for w in WIDTHS])
def wide_page(request: pytest.FixtureRequest, browser: Any) -> Iterator[Any]:  # noqa: F811
    context = browser.new_context(viewport={"width": request.param, "height": 900})
    p = context.new_page()
    p.set_default_timeout(WAIT_MS)
    yield p
    context.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:  # noqa: F811
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    p = context.new_page()
    p.set_default_timeout(WAIT_MS)
    yield p
    context.close()


# Where a button is once scrolled to, and what the page has on top at its centre.
_HIT = """b => {
  const r = b.getBoundingClientRect();
  const x = r.left + r.width / 2, y = r.top + r.height / 2;
  const top = document.elementFromPoint(x, y);
  const card = b.closest('.card').getBoundingClientRect();
  return {
    x, y,
    inViewport: r.width > 0 && r.height > 0 && r.left >= 0 && r.top >= 0
      && r.right <= innerWidth && r.bottom <= innerHeight,
    inCard: r.left >= card.left && r.right <= card.right,
    onTop: top === b || b.contains(top),
    covering: top ? top.outerHTML.slice(0, 120) : null,
  };
}"""

_NO_SIDEWAYS_SCROLL = "document.scrollingElement.scrollWidth <= innerWidth"


def assert_no_sideways_overflow(page: Any) -> None:
    widths = page.evaluate("[document.scrollingElement.scrollWidth, innerWidth]")
    assert page.evaluate(_NO_SIDEWAYS_SCROLL), f"the page scrolls sideways: {widths}"


def test_every_replay_cluster_button_can_be_seen_and_clicked(layout: Layout, wide_page: Any) -> None:
    page = wide_page
    with Dashboard() as ui:
        for run_id in (layout.seeded.done, layout.long):
            page.goto(f"{ui.url}/runs/{run_id}")
            assert_no_sideways_overflow(page)
            # The clusters table fits its card: nothing to scroll sideways inside it either.
            assert page.evaluate(
                "() => { const w = document.querySelector('#clusters .table-wrap');"
                " return w.scrollWidth <= w.clientWidth; }"
            )
            rows = page.locator("#clusters tr[data-cluster]")
            assert rows.count() >= 2
            for i in range(rows.count()):
                button = rows.nth(i).get_by_role("button", name="Replay cluster")
                button.scroll_into_view_if_needed()
                hit = button.evaluate(_HIT)
                assert hit["inViewport"], f"row {i}: the button is outside the window: {hit}"
                assert hit["inCard"], f"row {i}: the button sticks out of its card: {hit}"
                assert hit["onTop"], f"row {i}: the button is covered by {hit['covering']}"

        # Given the run with the long labels, when the failed cluster's button is clicked where it is
        # drawn (a mouse click at its centre, not a click sent to the element), then its replay opens.
        failed = page.locator("#clusters tr[data-cluster]", has_text=LONG_ERROR)
        assert "failed" in failed.inner_text()
        button = failed.get_by_role("button", name="Replay cluster")
        button.scroll_into_view_if_needed()
        hit = button.evaluate(_HIT)
        page.mouse.click(hit["x"], hit["y"])
        page.wait_for_selector(".flash")
        assert "Created replay run" in page.inner_text(".flash")
        assert str(layout.long) in page.inner_text("#summary")  # "replay of" the long run
        assert "queued 3" in page.inner_text("#summary")  # l00, l03, l06: the failed cluster only
        assert_no_sideways_overflow(page)


@pytest.mark.parametrize("where", ["runs", "tenants", "tenant", "item"])
def test_no_page_scrolls_sideways_at_1000_px(layout: Layout, browser: Any, where: str) -> None:  # noqa: F811
    context = browser.new_context(viewport={"width": 1000, "height": 900})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    with Dashboard() as ui:
        if where == "item":  # a failed item of the run with the long labels
            page.goto(f"{ui.url}/runs/{layout.long}/key/l00")
            assert LONG_ERROR in page.inner_text(".attempts")
        elif where == "tenant":
            page.goto(f"{ui.url}/tenants/{layout.seeded.tenant}")
        else:
            page.goto(f"{ui.url}/{where}")
        assert_no_sideways_overflow(page)
    context.close()


# -- budget meters ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spent", "budget", "reserved", "level"),
    [
        ("0", "10", "0", "ok"),
        ("7.99", "10", "0", "ok"),
        ("8", "10", "0", "warn"),  # 80 %: warn
        ("7", "10", "1", "warn"),  # what workers hold reserved counts: the gate counts it too
        ("9.99", "10", "0", "warn"),
        ("10", "10", "0", "over"),  # 100 %: over
        ("9", "10", "1", "over"),  # spent + reserved at the budget: no new call can reserve
        ("12", "10", "0", "over"),
        ("0", "0", "0", "over"),  # a zero budget allows nothing
    ],
)
def test_meter_levels(spent: str, budget: str, reserved: str, level: str) -> None:
    documented = (Decimal("0.8"), Decimal(1))  # docs/ui.md: warn from 80 %, over from 100 %
    assert documented == (METER_WARN_AT, METER_OVER_AT)
    assert meter_level(Decimal(spent), Decimal(budget), Decimal(reserved)) == level


def _spent(page: Any, ui: Dashboard, tenant: str) -> Decimal:
    answer = page.request.get(f"{ui.url}/api/tenants/{tenant}")
    assert answer.ok
    spent = Decimal(answer.json()["budget"]["spent_usd"])
    assert spent > 0
    return spent


def _meter(page: Any, selector: str) -> dict[str, Any]:
    meter = page.locator(selector)
    return dict(
        meter.evaluate(
            """m => {
              const fill = getComputedStyle(m.querySelector('.fill')).backgroundColor;
              const colour = v => {
                const probe = document.createElement('span');
                probe.style.backgroundColor = `var(${v})`;
                document.body.appendChild(probe);
                const c = getComputedStyle(probe).backgroundColor;
                probe.remove();
                return c;
              };
              return {level: m.dataset.level, cls: m.className, fill,
                      ok: colour('--ok'), warn: colour('--warn'), bad: colour('--bad'),
                      label: m.getAttribute('aria-valuetext')};
            }"""
        )
    )


def test_a_budget_meter_warns_near_its_budget_and_turns_red_over_it(layout: Layout, page: Any) -> None:
    tenant = layout.seeded.tenant
    with Dashboard() as ui:
        spent = _spent(page, ui, tenant)
        where = [
            (f"/tenants/{tenant}", "#budget .meter"),
            ("/tenants", f'tr[data-tenant="{tenant}"] .meter'),
            (f"/runs/{layout.seeded.done}", "#summary .meter"),  # the tenant budget the run is held to
        ]
        for exact, level, colour in [
            (spent / Decimal("0.5"), "ok", "ok"),  # 50 %
            (spent / Decimal("0.85"), "warn", "warn"),  # 85 %
            (spent, "over", "bad"),  # 100 %
            (spent / 2, "over", "bad"),  # 200 %
        ]:
            # a budget is given to at most 20 decimal places (budgets.parse_amount)
            budget = exact if exact == spent else exact.quantize(Decimal("1e-15"))
            papayya.tenants.set_budget(tenant, budget, "month")
            for path, selector in where:
                page.goto(ui.url + path)
                m = _meter(page, selector)
                assert m["level"] == level, (path, budget, m)
                assert level in m["cls"].split() or level == "ok", (path, m)
                assert m["fill"] == m[colour], (path, budget, m)
                assert m["fill"] != m[{"ok": "warn", "warn": "ok", "bad": "warn"}[colour]]
                percent = int(100 * spent / budget)
                assert f"{percent}%" in m["label"], (path, m)


# -- the outcome bar and its legend --------------------------------------------------------------


_BAR_AND_LEGEND = """box => {
  const seg = [...box.querySelectorAll('.bar-stack .seg')].map(s => ({
    status: s.dataset.status, count: Number(s.dataset.count),
    colour: getComputedStyle(s).backgroundColor, width: s.getBoundingClientRect().width}));
  const keys = [...box.querySelectorAll('.legend .key')].map(k => ({
    status: k.dataset.status, count: Number(k.dataset.count),
    text: Number(k.querySelector('b').textContent.replace(/,/g, '')),
    colour: getComputedStyle(k, '::before').backgroundColor,
    visible: k.getBoundingClientRect().width > 0}));
  return {seg, keys};
}"""


def assert_legend_matches_bar(box: Any) -> list[str]:
    """Every segment has a legend entry of its colour and count, and every counted entry a segment;
    different statuses have different colours. Returns the statuses in the bar."""
    shown = box.evaluate(_BAR_AND_LEGEND)
    segments, keys = shown["seg"], {k["status"]: k for k in shown["keys"]}
    assert segments, shown
    for s in segments:
        assert s["width"] > 0, s
        key = keys.get(s["status"])
        assert key is not None, f"no legend entry for the {s['status']} segment: {shown}"
        assert key["visible"], key
        assert key["count"] == key["text"] == s["count"], (s, key)
        assert key["colour"] == s["colour"], (s, key)
    assert {k for k, v in keys.items() if v["count"]} == {s["status"] for s in segments}, shown
    colours = [s["colour"] for s in segments]
    assert len(set(colours)) == len(colours), f"two statuses share a colour: {segments}"
    return [s["status"] for s in segments]


def test_the_outcome_bar_legend_names_every_segment(layout: Layout, page: Any) -> None:
    seeded = layout.seeded
    with Dashboard() as ui:
        page.goto(f"{ui.url}/runs/{seeded.done}")
        assert assert_legend_matches_bar(page.locator("#summary .progress")) == [
            "succeeded",
            "degraded",
            "failed",
        ]
        page.goto(f"{ui.url}/runs/{seeded.paused}")
        assert assert_legend_matches_bar(page.locator("#summary .progress")) == ["queued"]
        # The tenant's bar holds the paused run's queued items too: its legend says so.
        page.goto(f"{ui.url}/tenants/{seeded.tenant}")
        statuses = assert_legend_matches_bar(page.locator("#outcomes"))
        assert statuses == ["queued", "succeeded", "degraded", "failed"]
        assert "queued 4" in page.inner_text("#outcomes")


def test_the_live_legend_keeps_matching_the_bar(layout: Layout, page: Any) -> None:
    """While a run runs the page redraws the bar and the legend from /api/runs/RUN every few seconds:
    the redrawn ones match as the first did."""
    seeded = layout.seeded
    with Dashboard() as ui:
        # Given a running run (resumed for the workers; nobody works it, so its items stay queued).
        answer = page.request.post(
            f"{ui.url}/api/runs/{seeded.paused}/resume", headers={"Origin": ui.url}, data={}
        )
        assert answer.ok, answer.text()
        page.goto(f"{ui.url}/runs/{seeded.paused}")
        assert "running" in page.inner_text("#summary [data-f=status]")
        # When the page has redrawn the legend from the JSON (its nodes are replaced) ...
        page.evaluate("document.querySelector('#summary .legend .key').dataset.first = '1'")
        page.wait_for_function("!document.querySelector('#summary .legend .key[data-first]')")
        # ... then it still names every segment, with its colour and count.
        assert assert_legend_matches_bar(page.locator("#summary .progress")) == ["queued"]
