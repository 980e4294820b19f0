"""The status page (contract section 9) as HTML over HTTP against a real in-process engine:
what a person sees in the first response, before any script runs.
"""

from __future__ import annotations

import importlib
import re
import textwrap
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import quote, urljoin, urlsplit
from zoneinfo import ZoneInfo

import pytest
from fastapi import FastAPI

from engine.files.cron import CronExpression
from engine.settings import Settings
from engine.surfaces.page import render_job, render_status
from tests.conftest import MakePackage
from tests.harness import Running, client_for, engine_settings, eventually, running

TASKS = "page_tasks"
TASK_SOURCE = """
import logging

log = logging.getLogger("page_tasks.jobs")


def ok(*args, **kwargs):
    return None


def boom():
    log.warning("checking the disk before the report")
    log.error("<img src=x onerror=alert('log')> is not a disk")
    raise RuntimeError("disk full <script>alert('error')</script>")
"""
NEVER = '"0 0 1 1 *"'  # once a year: the job runs only when the test says run_job
EVIL = "<script>alert('id')</script>"


# -- reading the HTML ---------------------------------------------------------------------


class Page(HTMLParser):
    """The parts of a page the tests read: rows, elements by id, links, scripts, forms."""

    VOID = frozenset({"meta", "link", "input", "br", "img", "hr"})

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.html = html
        self.stack: list[dict[str, Any]] = []
        self.rows: dict[str, dict[str, Any]] = {}
        self.by_id: dict[str, dict[str, Any]] = {}
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.tags.append((tag, found))
        if tag in self.VOID:
            return
        node = {"tag": tag, "attrs": found, "text": [], "cells": []}
        self.stack.append(node)
        if tag == "tr" and found.get("data-id") is not None:
            self.rows[str(found["data-id"])] = node
        if found.get("id"):
            self.by_id[str(found["id"])] = node

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        while self.stack:
            node = self.stack.pop()
            text = "".join(node["text"])
            node["text"] = [text]
            if self.stack:
                self.stack[-1]["text"].append(text + " ")
                if node["tag"] == "td":
                    for parent in reversed(self.stack):
                        if parent["tag"] == "tr":
                            parent["cells"].append(" ".join(text.split()))
                            break
            if node["tag"] == tag:
                return

    def handle_data(self, data: str) -> None:
        if self.stack:
            self.stack[-1]["text"].append(data)

    def text(self, element_id: str) -> str:
        return " ".join("".join(self.by_id[element_id]["text"]).split())

    def row(self, job_id: str) -> dict[str, Any]:
        """``{"classes", "id", "schedule", "next", "last", "file"}`` of a job's row."""
        node = self.rows[job_id]
        names = ("id", "schedule", "next", "last", "file")
        return {
            "classes": set((node["attrs"].get("class") or "").split()),
            **dict(zip(names, node["cells"], strict=True)),
        }

    def links(self) -> list[str]:
        return [str(a["href"]) for tag, a in self.tags if tag in {"a", "link"} and a.get("href")]


# -- harness ------------------------------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return engine_settings(tmp_path, TASKS, shutdown_grace=1)


@pytest.fixture
def schedules(settings: Settings) -> Path:
    return settings.schedules_dir


@pytest.fixture
def tasks(make_package: MakePackage) -> ModuleType:
    make_package(TASKS, {"jobs": TASK_SOURCE})
    return importlib.import_module(f"{TASKS}.jobs")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


async def html(engine: Running, path: str, status: int = 200) -> Page:
    response = await engine.client.get(path)
    assert response.status_code == status, (path, response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("text/html")
    return Page(response.text)


TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d\d:\d\d")


def shown_times(text: str) -> list[str]:
    return TIME.findall(text)


def as_shown(when: datetime) -> str:
    """An instant as the page prints it: its wall clock and its offset."""
    return f"{when:%Y-%m-%d %H:%M:%S} {when.isoformat()[-6:]}"


async def failed_run(engine: Running, job_id: str) -> list[dict[str, Any]]:
    """Run ``job_id`` now and wait for one more failed run; its runs, newest first."""
    before = sum(r["status"] == "failed" for r in await engine.runs(job_id))
    assert await engine.scheduler.run_job(job_id) is True
    runs = await eventually(
        engine.until_runs(job_id, lambda runs: sum(r["status"] == "failed" for r in runs) > before),
        what=f"{job_id} failed",
    )
    return runs  # type: ignore[no-any-return]


MIXED = f"""
jobs:
  weekdays:
    task: {TASKS}.jobs:ok
    cron: "0 9 * * 1-5"
    timezone: Europe/Berlin
  heartbeat:
    task: {TASKS}.jobs:ok
    interval: 30s
  launch:
    task: {TASKS}.jobs:ok
    at: 2099-01-01T09:00:00
  resting:
    task: {TASKS}.jobs:ok
    cron: "*/5 * * * *"
    paused: true
"""


# -- the status page ----------------------------------------------------------------------


async def test_the_status_page_lists_every_job_with_its_schedule_in_words(
    settings: Settings, schedules: Path, tasks: ModuleType
) -> None:
    write(schedules / "mixed.yaml", MIXED)
    async with running(settings) as engine:
        page = await html(engine, "/")
        assert set(page.rows) == {"weekdays", "heartbeat", "launch", "resting"}

        weekdays = page.row("weekdays")
        assert "At 09:00, Monday through Friday" in weekdays["schedule"]
        assert "Europe/Berlin" in weekdays["schedule"]
        assert weekdays["file"].endswith("mixed.yaml:2")
        assert "never ran" in weekdays["last"]
        assert "Every 30 seconds" in page.row("heartbeat")["schedule"]
        assert "Once at 2099-01-01 09:00" in page.row("launch")["schedule"]

        # The next run as a time in the job's zone and as words.
        job = await engine.job("weekdays")
        when = datetime.fromisoformat(job["next_run_time"])
        assert when.strftime("%Y-%m-%d %H:%M:%S") in weekdays["next"]
        assert re.search(r"\bin \d+ (s|min|h|d)\b", weekdays["next"]), weekdays["next"]
        assert re.search(r"\bin 2\d{4} d\b|\bin \d+ d\b", page.row("launch")["next"])

        resting = page.row("resting")
        assert "paused" in resting["next"]
        assert "is-paused" in resting["classes"] and "PAUSED" not in resting["id"]
        assert "paused" in resting["id"]  # the word, not only a colour

        # Top of the page: the engine's facts, from /status.
        status = await engine.get("/status")
        facts = page.text("facts")
        assert status["revision"] in facts
        assert "role single" in facts and "scheduler running" in facts
        assert status["version"] in facts
        assert "file-errors" not in page.by_id


async def test_a_broken_files_error_shows_at_the_top_with_file_line_and_column(
    settings: Settings, schedules: Path, tasks: ModuleType
) -> None:
    write(schedules / "good.yaml", MIXED)
    broken = write(
        schedules / "broken.yaml",
        f"""
        jobs:
          typo:
            task: {TASKS}.jobs:ok
            crn: "0 2 * * *"
        """,
    )
    async with running(settings) as engine:
        errors = (await engine.get("/status"))["last_reconcile"]["errors"]
        assert errors, "the engine reports the broken file"
        page = await html(engine, "/")
        shown = page.text("file-errors")
        assert "1 problem in schedule files" in shown
        assert f"{errors[0]['file']}:4:5" in shown
        assert errors[0]["file"].endswith(broken.name)
        assert "unknown field 'crn'; did you mean 'cron'?" in shown
        assert set(page.rows) == {"weekdays", "heartbeat", "launch", "resting"}


async def test_a_failing_job_stands_out_with_a_word_and_its_error(
    settings: Settings, schedules: Path, tasks: ModuleType
) -> None:
    write(
        schedules / "jobs.yaml",
        f"""
        jobs:
          broken-report:
            task: {TASKS}.jobs:boom
            cron: {NEVER}
          fine:
            task: {TASKS}.jobs:ok
            cron: {NEVER}
        """,
    )
    async with running(settings) as engine:
        await failed_run(engine, "broken-report")
        assert await engine.scheduler.run_job("fine") is True
        await eventually(
            engine.until_runs("fine", lambda runs: runs and runs[0]["status"] == "success")
        )

        page = await html(engine, "/")
        failing, fine = page.row("broken-report"), page.row("fine")
        assert "is-failing" in failing["classes"]
        assert "failing" in failing["id"]  # a badge with the word, not colour alone
        assert failing["last"].startswith("failed")
        assert "disk full" in failing["last"]
        assert "is-failing" not in fine["classes"] and "failing" not in fine["id"]
        assert fine["last"].startswith("success")
        assert "1 failing" in page.text("count")
        assert "1 failing" in re.search(r"<title>(.*?)</title>", page.html).group(1)  # type: ignore[union-attr]


async def test_a_stale_job_stands_out_while_its_file_is_invalid(
    settings: Settings, schedules: Path, tasks: ModuleType
) -> None:
    path = write(
        schedules / "jobs.yaml", f"jobs:\n  kept:\n    task: {TASKS}.jobs:ok\n    cron: {NEVER}\n"
    )
    async with running(settings) as engine:
        path.write_text(path.read_text() + "    crn: oops\n")
        await engine.reconcile()
        row = (await html(engine, "/")).row("kept")
        assert "is-stale" in row["classes"]
        assert "stale" in row["id"]


# -- a job's page -------------------------------------------------------------------------


async def test_a_rows_link_leads_to_the_jobs_page_with_its_spec_and_next_fire_times(
    settings: Settings, schedules: Path, tasks: ModuleType
) -> None:
    write(
        schedules / "jobs.yaml",
        f"""
        jobs:
          weekdays:
            task: {TASKS}.jobs:ok
            cron: "0 9 * * 1-5"
            timezone: Europe/Berlin
            kwargs: {{db_password: hunter2, dsn: "postgresql://app:sesame@db/app", who: ops}}
            description: the morning report
            labels: {{team: ops}}
        """,
    )
    async with running(settings) as engine:
        index = await html(engine, "/")
        link = next(href for href in index.links() if "weekdays" in href)
        page = await html(engine, urljoin("/", link))

        spec = page.text("spec")
        assert f"{TASKS}.jobs:ok" in spec
        assert "At 09:00, Monday through Friday" in spec
        assert "the morning report" in spec and "team=ops" in spec
        assert '"who": "ops"' in spec
        assert "hunter2" not in page.html and '"db_password": "***"' in spec

        # Five fire times, the ones `schedctl next` computes, in the job's zone.
        zone = ZoneInfo("Europe/Berlin")
        job = await engine.job("weekdays")
        first = datetime.fromisoformat(job["next_run_time"])
        expected = [first, *CronExpression.parse("0 9 * * 1-5").next_times(first, zone, 4)]
        assert shown_times(page.text("fires")) == [as_shown(t) for t in expected]
        assert "No runs yet." in page.text("no-runs")


async def test_a_jobs_page_lists_its_runs_newest_first_with_their_errors(
    settings: Settings, schedules: Path, tasks: ModuleType
) -> None:
    write(
        schedules / "jobs.yaml", f"jobs:\n  boom:\n    task: {TASKS}.jobs:boom\n    cron: {NEVER}\n"
    )
    async with running(settings) as engine:
        await failed_run(engine, "boom")
        await failed_run(engine, "boom")
        runs = await engine.runs("boom")
        page = await html(engine, "/ui/jobs/boom")
        table = page.text("runs")
        assert table.count("failed") == len(runs) >= 2
        assert "RuntimeError: disk full" in table
        times = [a["datetime"] for tag, a in page.tags if tag == "time"]
        shown = [iso for iso in times if iso in {r["started_at"] for r in runs}]
        assert shown == [r["started_at"] for r in runs], "newest first, each with its start"
        assert runs[0]["started_at"] > runs[1]["started_at"]


async def test_a_jobs_page_shows_a_failed_runs_traceback(
    settings: Settings, schedules: Path, tasks: ModuleType
) -> None:
    write(
        schedules / "jobs.yaml", f"jobs:\n  boom:\n    task: {TASKS}.jobs:boom\n    cron: {NEVER}\n"
    )
    async with running(settings) as engine:
        await failed_run(engine, "boom")
        page = await html(engine, "/ui/jobs/boom")
        assert "Traceback (most recent call last)" in page.text("runs")
        assert 'raise RuntimeError("disk full' in page.text("runs")


async def test_a_jobs_page_shows_what_a_run_logged(
    settings: Settings, schedules: Path, tasks: ModuleType
) -> None:
    write(
        schedules / "jobs.yaml", f"jobs:\n  boom:\n    task: {TASKS}.jobs:boom\n    cron: {NEVER}\n"
    )
    async with running(settings) as engine:
        await failed_run(engine, "boom")
        page = await html(engine, "/ui/jobs/boom")
        assert "WARNING checking the disk before the report" in page.text("runs")


async def test_an_unknown_jobs_page_is_a_404_page_linking_home(
    settings: Settings, tasks: ModuleType
) -> None:
    async with running(settings) as engine:
        page = await html(engine, "/ui/jobs/nope", status=404)
        assert page.text("heading") == "No job nope"
        assert "../../" in page.links()


# -- rendering what the engine will send --------------------------------------------------

NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
JOB: dict[str, Any] = {
    "id": "nightly",
    "task": "tasks.reports:nightly",
    "args": ["pdf"],
    "kwargs": {"api_token": "sk-live-123", "who": "ops"},
    "trigger": {
        "type": "cron",
        "expression": "0 2 * * *",
        "timezone": "Europe/Berlin",
        "description": "At 02:00",
    },
    "executor": "local",
    "next_run_time": "2026-03-03T02:00:00+01:00",
    "paused": False,
    "source": "declared",
    "file": "schedules/reports.yaml",
    "line": 4,
    "description": None,
    "labels": {},
    "running": 0,
    "last_success_at": "2026-03-01T02:00:01+01:00",
    "stale": True,
    "last_run": {
        "status": "timeout",
        "scheduled_at": "2026-03-02T02:00:00+01:00",
        "started_at": "2026-03-02T02:00:00.004+01:00",
        "finished_at": "2026-03-02T02:10:00.004+01:00",
        "duration_s": 600.0,
        "attempt": 1,
        "error": "timed out after 10m",
        "traceback": None,
        "logs": [],
        "worker": "local",
    },
}
RUN = {
    "status": "failed",
    "scheduled_at": "2026-03-02T02:00:00+01:00",
    "started_at": "2026-03-02T02:00:00.004+01:00",
    "finished_at": "2026-03-02T02:00:01.5+01:00",
    "duration_s": 1.496,
    "attempt": 2,
    "error": "RuntimeError: <img src=x onerror=alert(1)>",
    "traceback": 'Traceback (most recent call last):\n  File "tasks/reports.py", line 9\n'
    "RuntimeError: <img src=x onerror=alert(1)>",
    "logs": [
        {"at": "2026-03-02T02:00:00.5+01:00", "level": "WARNING", "message": "<b>slow</b> disk"}
    ],
    "worker": "local",
}


def test_the_fields_the_engine_will_fill_are_shown_when_present() -> None:
    page = Page(
        render_status(
            [JOB],
            {
                "role": "leader",
                "scheduler": "running",
                "jobs": 1,
                "revision": "abc",
                "version": "1",
                "database": "ok",
                "commit": "0123456789abcdef0123",
                "last_reconcile": None,
            },
            NOW,
        )
    )
    row = page.row("nightly")
    assert {"is-failing", "is-stale"} <= row["classes"]
    assert "failing" in row["id"] and "stale" in row["id"]
    assert row["schedule"].startswith("At 02:00")
    assert row["last"].startswith("timeout") and "timed out after 10m" in row["last"]
    assert "in 17 h 2026-03-03 02:00:00 +01:00" in row["next"]
    facts = page.text("facts")
    assert "database ok" in facts and "commit 0123456789ab" in facts

    job_page = Page(render_job({**JOB, "runs": [RUN]}, NOW))
    runs = job_page.text("runs")
    assert "Traceback (most recent call last)" in runs
    assert "2026-03-02 02:00:00.500 +01:00 WARNING <b>slow</b> disk" in runs
    assert "1.5 s" in runs and "local" in runs
    assert "sk-live-123" not in job_page.html
    spec = job_page.text("spec")
    assert re.search(r"last success 1 d ago 2026-03-01 02:00:01 \+01:00", spec), spec
    assert "stale yes" in spec


def test_relative_words_and_times_of_the_page() -> None:
    from engine.surfaces.pageview import moment, relative

    cases = {
        0.2: "now",
        5: "in 5 s",
        59.9: "in 59 s",
        60: "in 1 min",
        299: "in 4 min",
        3600 * 5 + 1: "in 5 h",
        86400 * 3: "in 3 d",
        -120: "2 min ago",
        -7200: "2 h ago",
    }
    assert {s: relative(s) for s in cases} == cases
    m = moment("2026-03-02T10:00:00.123+01:00", NOW)
    assert m is not None
    assert (m.text, m.offset, m.relative) == ("2026-03-02 10:00:00", "+01:00", "in 1 h")
    assert moment(None, NOW) is None


# -- untrusted input, read-only, offline, behind a proxy ----------------------------------


async def test_ids_errors_file_names_and_logs_are_escaped(
    settings: Settings, schedules: Path, tasks: ModuleType
) -> None:
    write(schedules / "<img src=x onerror=alert(1)>.yaml", "jobs:\n  x:\n    task: [\n")
    write(
        schedules / "boom.yaml", f"jobs:\n  boom:\n    task: {TASKS}.jobs:boom\n    cron: {NEVER}\n"
    )
    evil_task = f"{TASKS}.<script>alert('task')</script>"
    write(schedules / "evil.yaml", f'jobs:\n  bad:\n    task: "{evil_task}"\n    cron: {NEVER}\n')
    async with running(settings) as engine:
        await failed_run(engine, "boom")
        for path in ("/", "/ui/jobs/boom"):
            response = await engine.client.get(path)
            assert response.status_code == 200, path
            text = response.text
            # Only our own two scripts, each with this response's nonce.
            nonce = re.search(r"'nonce-([^']+)'", response.headers["content-security-policy"])
            assert nonce is not None
            scripts = re.findall(r"<script[^>]*>", text)
            assert scripts == [f'<script nonce="{nonce.group(1)}">'] * 2, (path, scripts)
            for raw in ("<script>alert", "<img"):
                assert raw not in text, (path, raw)
        page = Page((await engine.client.get("/")).text)
        errors = page.text("file-errors")
        assert "<img src=x onerror=alert(1)>.yaml:" in errors
        assert "<script>alert('task')</script>" in errors
        assert "disk full <script>alert('error')</script>" in page.row("boom")["last"]
        runs = (await html(engine, "/ui/jobs/boom")).text("runs")
        assert "<img src=x onerror=alert('log')> is not a disk" in runs
        assert "raise RuntimeError(\"disk full <script>alert('error')</script>\")" in runs


def test_an_id_that_is_markup_is_shown_as_text() -> None:
    """Ids are checked when a job is added, but the page does not rely on it (a state
    database is input too)."""
    job = {**JOB, "id": EVIL, "runs": [RUN]}
    for html_text in (render_status([job], {"role": "single"}, NOW), render_job(job, NOW)):
        assert "<script>alert" not in html_text and "<img" not in html_text
        assert len(re.findall(r"<script", html_text)) == 2
    page = Page(render_status([job], {"role": "single"}, NOW))
    assert EVIL in page.rows
    assert page.links()[-1].endswith(quote(EVIL, safe=""))


async def test_the_page_is_read_only_self_contained_and_relative(
    settings: Settings, schedules: Path, tasks: ModuleType
) -> None:
    write(schedules / "mixed.yaml", MIXED)
    async with running(settings) as engine:
        for path in ("/", "/ui/jobs/weekdays"):
            page = await html(engine, path)
            tags = {tag for tag, _ in page.tags}
            assert not tags & {"form", "button", "iframe", "img", "object", "embed"}, path
            for tag, attrs in page.tags:
                assert "src" not in attrs, (path, tag, attrs)  # no external script or image
                for name in ("href", "data-jobs-url", "data-status-url", "data-job-url"):
                    value = attrs.get(name)
                    if value is None or value.startswith("data:"):
                        continue
                    assert not urlsplit(value).scheme and not value.startswith("/"), value
            assert "@import" not in page.html and "url(" not in page.html
            for method in ("POST", "PUT", "DELETE", "PATCH"):
                assert (await engine.client.request(method, path)).status_code == 405
        head = await engine.client.head("/")
        assert head.status_code == 200 and head.text == ""
        assert head.headers["x-content-type-options"] == "nosniff"
        policy = head.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "connect-src 'self'" in policy
        assert "'unsafe-inline'" not in policy


async def test_every_link_and_api_address_resolves_under_a_path_prefix(
    settings: Settings, schedules: Path, tasks: ModuleType
) -> None:
    """Behind a proxy at /tools/schedctl/ (or a port-forward), nothing points outside it."""
    write(schedules / "mixed.yaml", MIXED)
    async with running(settings) as engine:
        outer = FastAPI()
        outer.mount("/tools/schedctl", engine.app)
        async with client_for(outer) as client:
            base = "http://localhost/tools/schedctl/"
            seen: set[str] = set()
            pages = [base]
            while pages:
                url = pages.pop()
                response = await client.get(url)
                assert response.status_code == 200, url
                page = Page(response.text)
                body = next(attrs for tag, attrs in page.tags if tag == "body")
                targets = [*page.links()]
                targets += [str(v) for k, v in body.items() if k.endswith("-url") and v]
                for target in targets:
                    if target.startswith("data:"):
                        continue
                    absolute = urljoin(url, target)
                    assert absolute.startswith(base), (url, target, absolute)
                    if absolute in seen:
                        continue
                    seen.add(absolute)
                    found = await client.get(absolute)
                    assert found.status_code == 200, (url, target, absolute)
                    if "/ui/jobs/" in absolute:
                        pages.append(absolute)
            assert {f"{base}jobs", f"{base}status", f"{base}jobs/weekdays"} <= seen


async def test_the_first_response_holds_the_jobs_and_errors_without_script(
    settings: Settings, schedules: Path, tasks: ModuleType
) -> None:
    write(schedules / "mixed.yaml", MIXED)
    write(schedules / "broken.yaml", "jobs:\n  typo:\n    task: x\n    crn: 1\n")
    async with running(settings) as engine:
        text = (await engine.client.get("/")).text
        without_scripts = re.sub(r"<script.*?</script>", "", text, flags=re.S)
        page = Page(without_scripts)
        assert set(page.rows) == {"weekdays", "heartbeat", "launch", "resting"}
        assert "broken.yaml:" in page.text("file-errors")


def test_a_job_page_for_a_runtime_job_shows_its_next_run_only() -> None:
    upcoming = (NOW + timedelta(minutes=5)).isoformat()
    job = {
        **JOB,
        "source": "runtime",
        "file": None,
        "line": None,
        "next_run_time": upcoming,
        "trigger": {"type": "interval", "expression": "1h", "timezone": "UTC"},
        "runs": [],
    }
    page = Page(render_job(job, NOW))
    assert re.findall(r"\d\d:\d\d:\d\d", page.text("fires")) == ["08:05:00"]
    assert "in 5 min" in page.text("fires")


def test_the_templates_ship_in_the_wheel() -> None:
    import fnmatch
    import tomllib

    import engine.surfaces

    config = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["engine.surfaces"]
    folder = Path(engine.surfaces.__file__).parent
    files = [
        p.relative_to(folder).as_posix() for p in (folder / "templates").rglob("*") if p.is_file()
    ]
    assert files
    assert all(any(fnmatch.fnmatch(f, pattern) for pattern in patterns) for f in files), files
