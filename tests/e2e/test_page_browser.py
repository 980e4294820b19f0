"""The status page in a real headless Chromium against ``schedctl serve`` (contract section 9).

Needs Debian's ``chromium`` (``apt-get install -y chromium``) and Playwright for Python
(the ``test`` extra); Playwright drives the system browser, it never downloads one. Both
missing: the tests skip, except under ``CI=true``, where they fail.

Each test saves a screenshot for a person to look at: into its pytest tmp folder, and also
into ``$SCHEDCTL_SCREENSHOTS`` when set (``SCHEDCTL_SCREENSHOTS=docs`` refreshes the ones
the README shows).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import ServeFactory, Server, wait_for, write, write_atomic

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("SCHEDCTL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 800}
UPDATE_TIMEOUT_MS = 10_000  # the page polls every 3 s; the watcher settles in 250 ms

PAGE_TASKS = '''
"""Tasks of the status page's browser tests."""

import logging

log = logging.getLogger("tasks.page")


def report(*args, **kwargs):
    log.info("report written")


def evil():
    raise RuntimeError("<img src=x onerror=alert(1)> <b>bold</b>")


def sync_inventory():
    log.warning("inventory API answered 503, giving up")
    raise ConnectionError("inventory API unavailable: 503 Service Unavailable")
'''

SHOWCASE = """
defaults:
  timezone: Europe/Berlin
jobs:
  nightly-report:
    task: tasks.page:report
    cron: "0 2 * * *"
    kwargs: {recipients: [ops@example.com], smtp_password: hunter2}
    description: PDF report of yesterday's orders
    labels: {team: finance}
  weekday-digest:
    task: tasks.page:report
    cron: "30 8 * * 1-5"
  heartbeat:
    task: tasks.page:report
    interval: 30s
  inventory-sync:
    task: tasks.page:sync_inventory
    interval: 3s
    retries: 1
    retry_delay: 1s
  cleanup-tmp:
    task: tasks.page:report
    cron: "@hourly"
    paused: true
  launch-announcement:
    task: tasks.page:report
    at: 2099-01-01T09:00:00
"""

BROKEN = """
jobs:
  billing-export:
    task: tasks.page:report
    crn: "0 3 * * *"
"""


# -- the browser --------------------------------------------------------------------------


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (required under CI=true)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        _unavailable(f"no Chromium at {CHROMIUM}: apt-get install -y chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright is not installed: pip install -e '.[test]'")
    path = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


class Tab:
    """One browser page on the status page, with the errors it logged."""

    def __init__(self, browser: Any, server: Server) -> None:
        self.server = server
        self.base = f"http://127.0.0.1:{server.port}/"
        self.context = browser.new_context(viewport=VIEWPORT)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.navigations: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        self.page.on(
            "console",
            lambda message: (
                self.errors.append(f"console: {message.text}") if message.type == "error" else None
            ),
        )
        self.page.on(
            "framenavigated",
            lambda frame: (
                self.navigations.append(frame.url) if frame == self.page.main_frame else None
            ),
        )

    def open(self, path: str = "") -> Any:
        self.page.goto(self.base + path)
        self.page.wait_for_selector("html[data-ready]")
        return self.page

    def rows(self, visible_only: bool = True) -> list[str]:
        ids: list[str] = self.page.eval_on_selector_all(
            "#jobs tr[data-id]",
            "(rows, visible) => rows.filter((r) => !visible || !r.closest('[hidden]'))"
            ".map((r) => r.dataset.id)",
            visible_only,
        )
        return ids


@pytest.fixture
def open_tab(browser: Any) -> Iterator[Any]:
    """``open_tab(server) -> Tab``; fails the test if a page logged an error (CSP included)."""
    tabs: list[Tab] = []

    def make(server: Server) -> Tab:
        tab = Tab(browser, server)
        tabs.append(tab)
        return tab

    yield make
    for tab in tabs:
        tab.context.close()
    for tab in tabs:
        assert not tab.errors, f"the page logged errors: {tab.errors}"


def screenshot(tab: Tab, tmp_path: Path, name: str, *, publish: bool = False) -> Path:
    """Save the whole page as ``name.png`` in the test's folder; with ``publish``, also in
    ``$SCHEDCTL_SCREENSHOTS`` (``docs`` for the README's pictures), once the page is live."""
    if publish:
        tab.page.wait_for_selector("#live:has-text('live')", timeout=UPDATE_TIMEOUT_MS)
    path = tmp_path / f"{name}.png"
    tab.page.screenshot(path=str(path), full_page=True, animations="disabled", caret="initial")
    assert path.stat().st_size > 10_000, "the screenshot shows something"
    folder = os.environ.get("SCHEDCTL_SCREENSHOTS")
    if folder and publish:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(folder) / path.name)
    return path


# -- helpers ------------------------------------------------------------------------------


@pytest.fixture
def showcase(project: Path) -> Path:
    write(project / "tasks" / "page.py", PAGE_TASKS)
    write(project / "schedules" / "jobs.yaml", SHOWCASE)
    write(project / "schedules" / "billing.yaml", BROKEN)
    return project


def wait_failed(server: Server, job_id: str) -> dict[str, Any]:
    return server.wait_job(
        job_id,
        lambda job: (job.get("last_run") or {}).get("status") == "failed",
        timeout=15,
        what=f"{job_id} to have failed",
    )


def text(page: Any, selector: str) -> str:
    """An element's text, rendered or not (a chunk of rows out of view is not rendered)."""
    return " ".join(str(page.text_content(selector)).split())


def cell_background(page: Any, job_id: str) -> str:
    color: str = page.eval_on_selector(
        f'#jobs tr[data-id="{job_id}"] td.c-sched', "td => getComputedStyle(td).backgroundColor"
    )
    return color


# -- tests --------------------------------------------------------------------------------


def test_the_status_page_lists_jobs_errors_and_failing_jobs(
    serve: ServeFactory, showcase: Path, open_tab: Any, tmp_path: Path
) -> None:
    billing = showcase / "schedules" / "billing.yaml"
    write(billing, BROKEN.replace("crn:", "cron:"))
    server = serve()
    wait_failed(server, "inventory-sync")
    write_atomic(billing, BROKEN)  # a typo: its job keeps running as last applied
    server.wait_job("billing-export", lambda job: job.get("stale"), what="billing-export stale")
    tab = open_tab(server)
    page = tab.open()

    assert sorted(tab.rows()) == sorted(server.jobs())
    errors = page.inner_text("#file-errors")
    assert "billing.yaml:4:5" in errors
    assert "unknown field 'crn'; did you mean 'cron'?" in errors
    stale = page.locator('#jobs tr[data-id="billing-export"]')
    assert "stale" in stale.locator("td.c-id").inner_text().lower()
    assert cell_background(page, "billing-export") not in {
        cell_background(page, "heartbeat"),
        cell_background(page, "inventory-sync"),
    }

    failing = page.locator('#jobs tr[data-id="inventory-sync"]')
    assert "failing" in failing.locator("td.c-id").inner_text().lower()  # a word ...
    assert "failed" in failing.locator("td.c-last").inner_text()
    assert cell_background(page, "inventory-sync") != cell_background(
        page, "heartbeat"
    )  # ... and colour
    assert "At 02:00" in page.locator('#jobs tr[data-id="nightly-report"] td.c-sched').inner_text()
    assert "paused" in page.locator('#jobs tr[data-id="cleanup-tmp"]').inner_text().lower()
    screenshot(tab, tmp_path, "status-page", publish=True)


def test_untrusted_text_stays_text_after_the_script_rebuilds_it(
    serve: ServeFactory, project: Path, open_tab: Any, tmp_path: Path
) -> None:
    write(project / "tasks" / "page.py", PAGE_TASKS)
    schedules = project / "schedules"
    write(schedules / "jobs.yaml", "jobs:\n  evil:\n    task: tasks.page:evil\n    interval: 1s\n")
    write(schedules / "<img src=x onerror=alert(2)>.yaml", "jobs:\n  x: [\n")
    server = serve()
    wait_failed(server, "evil")
    tab = open_tab(server)
    page = tab.open()
    page.evaluate(
        "window.__cell = document.querySelector('#jobs tr[data-id=evil] .err');"
        "window.__alert = document.getElementById('file-errors');"
    )
    # Runs keep failing: the script rebuilds the row, and the alerts, from the API's JSON.
    wait_for(
        lambda: page.evaluate(
            "document.querySelector('#jobs tr[data-id=evil] .err') !== window.__cell"
            " && document.getElementById('file-errors') !== window.__alert"
        ),
        timeout=UPDATE_TIMEOUT_MS / 1000,
        what="the script to rebuild the row and the alerts",
    )
    assert page.locator("#jobs img, #jobs b, #alerts img").count() == 0
    assert "<img src=x onerror=alert(1)> <b>bold</b>" in text(page, '#jobs tr[data-id="evil"]')
    assert "<img src=x onerror=alert(2)>.yaml:3:1 invalid YAML" in text(page, "#file-errors")
    page.goto(tab.base + "ui/jobs/evil")
    page.wait_for_selector("#live:has-text('live')", timeout=UPDATE_TIMEOUT_MS)
    assert page.locator("#runs img, #runs b").count() == 0
    assert "<img src=x onerror=alert(1)>" in text(page, "#runs")
    screenshot(tab, tmp_path, "escaped")


def test_a_job_page_shows_its_spec_runs_and_next_fire_times(
    serve: ServeFactory, showcase: Path, open_tab: Any, tmp_path: Path
) -> None:
    server = serve()
    wait_failed(server, "inventory-sync")
    tab = open_tab(server)
    page = tab.open()
    page.click('#jobs tr[data-id="inventory-sync"] td.c-id a')
    page.wait_for_selector("html[data-ready]")
    assert page.url == tab.base + "ui/jobs/inventory-sync"
    assert "inventory-sync" in page.inner_text("h1")
    assert "tasks.page:sync_inventory" in page.inner_text("#spec")
    assert "Every 3 seconds" in page.inner_text("#spec")
    runs = page.inner_text("#runs")
    assert "failed" in runs
    assert "inventory API unavailable: 503 Service Unavailable" in runs
    assert len(page.locator("#fires li").all()) >= 1
    screenshot(tab, tmp_path, "job-page", publish=True)

    page.goto(tab.base + "ui/jobs/nightly-report")
    page.wait_for_selector("html[data-ready]")
    spec = page.inner_text("#spec")
    assert "hunter2" not in page.content() and '"smtp_password": "***"' in spec
    assert len(page.locator("#fires li").all()) == 5
    assert all(" 02:00:00" in li for li in page.locator("#fires li").all_inner_texts())


def test_a_job_page_shows_the_failed_runs_traceback_and_logs(
    serve: ServeFactory, showcase: Path, open_tab: Any, tmp_path: Path
) -> None:
    server = serve()
    wait_failed(server, "inventory-sync")
    tab = open_tab(server)
    page = tab.open("ui/jobs/inventory-sync")
    screenshot(tab, tmp_path, "job-page-traceback")
    runs = page.inner_text("#runs")
    assert "Traceback (most recent call last)" in runs
    assert 'raise ConnectionError("inventory API unavailable' in runs
    assert "inventory API answered 503, giving up" in runs


def test_the_page_updates_after_an_edit_without_a_reload(
    serve: ServeFactory, project: Path, open_tab: Any, tmp_path: Path
) -> None:
    many = "jobs:\n" + "".join(
        f"  job-{n:03d}:\n    task: tasks.e2e:noop\n    cron: '{n % 60} * * * *'\n"
        for n in range(150)
    )
    schedules = project / "schedules"
    write(schedules / "many.yaml", many)
    server = serve()
    tab = open_tab(server)
    page = tab.open()
    assert len(tab.rows()) == 150  # more than one chunk of rows
    page.evaluate("window.__sameDocument = true; window.scrollTo(0, 900)")
    scrolled = page.evaluate("window.scrollY")
    assert scrolled > 0, "the table is long enough to scroll"
    navigations = len(tab.navigations)

    added = (
        "  zz-added:\n    task: tasks.e2e:noop\n    interval: 1h30m\n"
        "  zz-once:\n    task: tasks.e2e:noop\n    at: 2099-01-01T09:00:00\n"
        "    timezone: America/New_York\n"
    )
    write_atomic(schedules / "many.yaml", many + added)
    page.wait_for_selector('#jobs tr[data-id="zz-once"]', timeout=UPDATE_TIMEOUT_MS)

    assert page.evaluate("window.__sameDocument") is True, "the page was not reloaded"
    assert len(tab.navigations) == navigations
    assert page.evaluate("window.scrollY") == scrolled
    assert "152 jobs" in page.inner_text("#count")
    # A row the script added reads as the server renders it.
    fresh = open_tab(server).open()
    for job_id in ("zz-added", "zz-once", "job-007"):
        for cell in ("c-id", "c-sched", "c-last", "c-file"):
            selector = f'#jobs tr[data-id="{job_id}"] td.{cell}'
            assert text(page, selector) == text(fresh, selector) != "", selector
    assert "Every 1 hour 30 minutes" in text(page, '#jobs tr[data-id="zz-added"]')
    assert "Once at 2099-01-01 09:00 (America/New_York)" in text(
        page, '#jobs tr[data-id="zz-once"]'
    )

    page.fill("#filter", "zz")
    wait_for(lambda: tab.rows() == ["zz-added", "zz-once"], what="the filter across chunks")
    assert "2 of 152 jobs" in page.inner_text("#count")
    page.fill("#filter", "")
    wait_for(lambda: len(tab.rows()) == 152, what="every row back")

    write_atomic(schedules / "many.yaml", many.replace("  job-000:\n", "  job-renamed:\n"))
    page.wait_for_selector(
        '#jobs tr[data-id="job-000"]', state="detached", timeout=UPDATE_TIMEOUT_MS
    )
    assert "job-renamed" in tab.rows() and "zz-once" not in tab.rows()
    assert page.evaluate("window.__sameDocument") is True
    screenshot(tab, tmp_path, "status-page-updated")


def test_typing_in_the_filter_hides_rows_and_the_filter_survives_updates(
    serve: ServeFactory, showcase: Path, open_tab: Any, tmp_path: Path
) -> None:
    server = serve()
    tab = open_tab(server)
    page = tab.open()
    everything = tab.rows()
    page.fill("#filter", "report")
    wait_for(lambda: tab.rows() == ["nightly-report"], what="only nightly-report shown")
    assert f"1 of {len(everything)} jobs" in page.inner_text("#count")
    page.fill("#filter", "europe/berlin paused")  # every word must match
    wait_for(lambda: tab.rows() == ["cleanup-tmp"], what="only the paused job shown")
    page.fill("#filter", "billing.yaml")
    wait_for(lambda: tab.rows() == [], what="no row matches a file with no applied jobs")

    page.fill("#filter", "report")
    write_atomic(
        showcase / "schedules" / "more.yaml",
        "jobs:\n  weekly-report:\n    task: tasks.page:report\n    cron: '@weekly'\n"
        "  other:\n    task: tasks.page:report\n    cron: '@daily'\n",
    )
    page.wait_for_selector('#jobs tr[data-id="weekly-report"]', timeout=UPDATE_TIMEOUT_MS)
    wait_for(
        lambda: tab.rows() == ["nightly-report", "weekly-report"], what="the filter still applies"
    )
    assert page.input_value("#filter") == "report"
    assert "other" in tab.rows(visible_only=False)
    screenshot(tab, tmp_path, "status-page-filtered")
    page.fill("#filter", "")
    wait_for(lambda: len(tab.rows()) == len(everything) + 2, what="every row back")


def test_clicking_a_header_sorts_and_the_sort_survives_updates(
    serve: ServeFactory, showcase: Path, open_tab: Any, tmp_path: Path
) -> None:
    server = serve()
    tab = open_tab(server)
    page = tab.open()
    ids = tab.rows()
    assert ids == sorted(ids), "the API's order (by id) to begin with"

    page.click('#jobs th[data-key="id"]')
    assert tab.rows() == sorted(ids)
    assert page.get_attribute('#jobs th[data-key="id"]', "aria-sort") == "ascending"
    page.click('#jobs th[data-key="id"]')
    assert tab.rows() == sorted(ids, reverse=True)
    assert page.get_attribute('#jobs th[data-key="id"]', "aria-sort") == "descending"

    page.click('#jobs th[data-key="next"]')
    jobs = server.jobs()
    by_next = sorted(
        (job_id for job_id in ids if jobs[job_id]["next_run_time"]),
        key=lambda job_id: datetime.fromisoformat(jobs[job_id]["next_run_time"]),
    )
    shown = [job_id for job_id in tab.rows() if jobs[job_id]["next_run_time"]]
    assert shown[:2] == by_next[:2], "soonest first"
    assert tab.rows()[-1] == "cleanup-tmp", "a paused job (no next run) sorts last"
    assert page.get_attribute('#jobs th[data-key="id"]', "aria-sort") == "none"

    page.click('#jobs th[data-key="id"]')
    page.click('#jobs th[data-key="id"]')  # descending: a new "aaa" row belongs at the bottom
    write_atomic(
        showcase / "schedules" / "more.yaml",
        "jobs:\n  aaa-first:\n    task: tasks.page:report\n    cron: '@daily'\n",
    )
    page.wait_for_selector('#jobs tr[data-id="aaa-first"]', timeout=UPDATE_TIMEOUT_MS)
    assert tab.rows() == sorted([*ids, "aaa-first"], reverse=True)
    screenshot(tab, tmp_path, "status-page-sorted")
