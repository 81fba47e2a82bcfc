"""``papayya ui`` in a real headless Chromium, as a person uses it: every page loads and shows what the
store holds; a new run appears in the list while it is open; replaying a cluster opens the new run;
resuming a paused run queues it for the workers; a tenant's budget is edited in a form; a tenant token
cannot open another tenant's item (it is not found); the provider batches page leads to a batch and on
to its run, with nothing in the browser's console.

The browser is Debian's Chromium at /usr/bin/chromium (skipped on a laptop without it, a failure in
CI). A screenshot of each page is saved under a temporary directory printed in the test output.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from papayya import control
from papayya.runtime import Runtime
from tests.conftest import need_service
from tests.integration import test_ui_batches
from tests.integration.test_ui_api import Seeded, enrich, seed
from tests.integration.test_ui_batches import OpenBatch

pytest.importorskip("starlette", reason="the ui extra is not installed: pip install 'papayya[ui]'")
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

from papayya.ui.app import create_app, make_server  # noqa: E402
from papayya.ui.auth import Tokens, load_tokens  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 15_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        need_service(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def screens(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("ui-screens")
    print(f"\nscreenshots of papayya ui: {where}")
    return where


class Dashboard:
    """``papayya ui`` served by uvicorn on a free loopback port, in a thread of the test process."""

    def __init__(self, tokens: Tokens | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.server = make_server(create_app(tokens, host="127.0.0.1"), "127.0.0.1", port)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> Dashboard:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "the dashboard did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)
        self.sock.close()


@pytest.fixture
def seeded(rt: Runtime, tenant: str) -> Seeded:
    return seed(tenant)


# A batch-mode run whose items wait on one provider batch the fake provider holds open.
batch_mode, oa, held = test_ui_batches.batch_mode, test_ui_batches.oa, test_ui_batches.held


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    p = context.new_page()
    p.set_default_timeout(WAIT_MS)
    yield p
    context.close()


def shoot(page: Any, screens: Path, name: str) -> None:
    page.screenshot(path=str(screens / f"{name}.png"), full_page=False)


def test_every_page_shows_the_store(seeded: Seeded, page: Any, screens: Path) -> None:
    with Dashboard() as ui:
        page.goto(f"{ui.url}/runs")
        row = page.locator(f'tr[data-run="{seeded.done}"]')
        assert "completed" in row.inner_text()
        assert "paused" in page.locator(f'tr[data-run="{seeded.paused}"]').inner_text()
        shoot(page, screens, "runs")

        page.goto(f"{ui.url}/tenants")
        assert "1 paused" in page.locator(f'tr[data-tenant="{seeded.tenant}"]').inner_text()
        shoot(page, screens, "tenants")

        page.click(f'a:text-is("{seeded.tenant}")')
        page.wait_for_url(f"**/tenants/{seeded.tenant}")
        assert page.locator("svg.chart").count() == 2
        assert "budget $5.00" in page.locator("svg.chart").first.inner_html()
        assert "waiting for the new prompt" in page.locator("#paused").inner_text()
        shoot(page, screens, "tenant")

        page.goto(f"{ui.url}/runs/{seeded.done}")
        assert "tool_returned_none" in page.inner_text("body")
        assert "openai/gpt-4o-mini" in page.inner_text("body")
        shoot(page, screens, "run")

        page.click('a:text-is("i05")')
        page.wait_for_url("**/items/*")
        assert "ValueError" in page.inner_text(".attempts")
        assert "openai/gpt-4o-mini\t40\t12" in page.inner_text(".attempts")  # its LLM call, tokens in/out
        shoot(page, screens, "item")


def test_a_new_run_appears_in_the_open_list(seeded: Seeded, page: Any) -> None:
    with Dashboard() as ui:
        page.goto(f"{ui.url}/runs")
        # Given the list is open, when a run is submitted elsewhere, then it shows up by itself.
        handle = enrich.submit([{"id": "n01", "title": "new"}], tenant=seeded.tenant)
        page.wait_for_selector(f'tr[data-run="{handle.run_id}"]')
        assert "running" in page.locator(f'tr[data-run="{handle.run_id}"]').inner_text()


def test_replay_a_cluster_opens_the_new_run(seeded: Seeded, page: Any, screens: Path) -> None:
    with Dashboard() as ui:
        page.goto(f"{ui.url}/runs/{seeded.done}")
        cluster = page.locator("tr[data-cluster]", has_text="tool_returned_none")
        cluster.get_by_role("button", name="Replay cluster").click()
        page.wait_for_selector(".flash")
        assert "Created replay run" in page.inner_text(".flash")
        assert "replay of" in page.inner_text("#summary")
        assert "queued 2" in page.inner_text("#summary")
        new_run = page.url.split("?")[0].rsplit("/", 1)[1]
        shoot(page, screens, "replay")
        # A worker runs it (here, this process); the original run's page shows what the replay did.
        control.resume_run(new_run, agent=enrich)
        page.goto(f"{ui.url}/runs/{seeded.done}")
        replays = page.inner_text("#replays")
        assert new_run[:8] in replays
        assert "degraded->degraded 2" in replays


def test_resume_a_paused_run_for_the_workers(seeded: Seeded, page: Any) -> None:
    with Dashboard() as ui:
        page.goto(f"{ui.url}/tenants/{seeded.tenant}")
        page.locator("#paused").get_by_role("button", name="Resume").click()
        page.wait_for_selector(".flash")
        assert "Resumed" in page.inner_text(".flash")
        assert page.url.split("?")[0].endswith(f"/runs/{seeded.paused}")
        assert "running" in page.inner_text("#summary [data-f=status]")
        assert "queued 4" in page.inner_text("#summary")


def test_edit_a_tenant_budget(seeded: Seeded, page: Any) -> None:
    with Dashboard() as ui:
        page.goto(f"{ui.url}/tenants/{seeded.tenant}")
        page.fill('#budget-form input[name="budget"]', "12.50")
        page.select_option('#budget-form select[name="period"]', "day")
        page.click('#budget-form button[type="submit"]')
        page.wait_for_selector(".flash")
        assert "$12.50 per day" in page.inner_text(".flash")
        assert "$12.50 per day" in page.inner_text("#budget")
        assert "budget $12.50" in page.locator("svg.chart").first.inner_html()
        page.fill('#cap-form input[name="max_running"]', "7")
        page.click('#cap-form button[type="submit"]')
        page.wait_for_selector(".flash")
        assert "at most 7 items running at once" in page.inner_text(".flash")


def test_a_tenant_token_sees_only_its_tenant(seeded: Seeded, browser: Any) -> None:
    tokens = load_tokens("admin-token", tenant_tokens=f"{seeded.tenant}:mine-token")
    with Dashboard(tokens) as ui:
        context = browser.new_context()
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        response = page.goto(f"{ui.url}/runs")
        assert response.status == 401
        page.fill('input[name="token"]', "mine-token")
        page.click('button[type="submit"]')
        page.wait_for_url("**/runs")
        assert str(seeded.done)[:8] in page.inner_text("#runs")
        assert str(seeded.theirs)[:8] not in page.inner_text("body")

        admin = browser.new_context()
        admin_page = admin.new_page()
        admin_page.goto(f"{ui.url}/runs/{seeded.theirs}?token=admin-token")
        theirs_item = admin_page.locator("#items a").first.get_attribute("href")
        admin.close()

        # (not found: the database holds a tenant token's connections to its tenant, no existence leak)
        response = page.goto(f"{ui.url}{theirs_item}")
        assert response.status == 404
        assert "No item" in page.inner_text("body")
        context.close()


def test_provider_batches_lead_to_a_batch_and_its_run(held: OpenBatch, page: Any, screens: Path) -> None:
    problems: list[str] = []

    def console(message: Any) -> None:
        # The dashboard has no favicon; Chromium's request for one is not the page's doing.
        if message.type in ("error", "warning") and not message.location["url"].endswith("/favicon.ico"):
            problems.append(f"{message.text} ({message.location['url']})")

    page.on("console", console)
    page.on("pageerror", lambda e: problems.append(str(e)))
    with Dashboard() as ui:
        page.goto(f"{ui.url}/runs")
        page.click('header nav a:text-is("Batches")')
        page.wait_for_url("**/batches")
        row = page.locator(f'tr[data-batch="{held.batch_id}"]')
        assert held.provider_batch_id in row.inner_text()
        assert "submitted" in row.inner_text()
        shoot(page, screens, "batches")
        row.locator("a").first.click()
        page.wait_for_url(f"**/batches/{held.batch_id}")
        assert str(held.run_id) in page.inner_text("#batch-runs")
        page.click(f'#batch-runs a:text-is("{held.run_id}")')
        page.wait_for_url(f"**/runs/{held.run_id}")
        assert "waiting on 1 provider batch" in page.inner_text("#summary")
    assert problems == []


def test_the_screenshots_are_small(seeded: Seeded, screens: Path) -> None:
    """Ordered last in the module: every page above left a PNG (for docs/img)."""
    shots = sorted(screens.glob("*.png"))
    if not shots:
        pytest.skip("no screenshots were taken in this session")
    for shot in shots:
        assert 0 < os.path.getsize(shot) < 600_000, shot
