"""The status page: ``GET /`` (every job, file errors, engine facts) and ``GET /ui/jobs/{id}``
(one job's spec, runs and next fire times), as server-rendered HTML.

The first response is the whole page; a little inline script then refreshes it in place
from the same JSON API everyone reads (``jobs``, ``status``, ``jobs/{id}``), through
relative links only, so it works behind a proxy, under a path prefix and offline. It is
read-only: no forms, nothing that changes the engine. Every value is escaped by Jinja2's
autoescape, and a per-response Content-Security-Policy nonce lets only our own inline
script and style run, so an id or message that slips through escaping still cannot.

Rendering and gzip run off the event loop: a 10k-job page takes a few hundred
milliseconds to render, which would otherwise delay due runs; the engine builds its read
models off the loop too (``jobs_async``). All rows are in the first response, in tables
of ``CHUNK`` rows that the browser lays out only near the viewport (``content-visibility``):
no pagination, and at 10k jobs the page is interactive in a few seconds at most
(``python -m tests.bench page``).
"""

from __future__ import annotations

import asyncio
import gzip
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates

from engine.surfaces.pageview import (
    counts,
    fire_times,
    job_row,
    moment,
    run_views,
    spec_items,
    status_view,
)

__all__ = ["JOB_PAGE", "render_job", "render_missing", "render_status", "router"]

JOB_PAGE = "/ui/jobs/{job_id:path}"
"""Where a job's page lives: ``/jobs/{id}`` is the JSON API's."""
CHUNK = 100  # rows per table of the status page: the browser skips the chunks out of view
GZIP_OVER = 16 * 1024  # a 10k-job page is 5 MB of HTML and 0.4 MB gzipped: port-forwards are slow

router = APIRouter()
_READ = ["GET", "HEAD"]

templates = Jinja2Templates(
    env=jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
)


def _headers(nonce: str) -> dict[str, str]:
    policy = (
        "default-src 'none'; "
        f"script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        "connect-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }


def render_status(
    jobs: list[dict[str, Any]], status: dict[str, Any], now: datetime, nonce: str = ""
) -> str:
    """The status page's HTML for ``GET /jobs``'s jobs and ``GET /status``."""
    # Rows are made as the template reaches them and dropped after: 10k rows kept alive at
    # once would set off full garbage collections, which pause the event loop's thread too.
    rows = (job_row(job, now) for job in jobs)
    return templates.get_template("index.html").render(
        page="status",
        home="./",
        nonce=nonce,
        rendered=f"rendered {now.astimezone(UTC):%H:%M:%S} UTC",
        rows=rows,
        chunk=CHUNK,
        counts=counts(jobs),
        status=status_view(status, now),
    )


def render_job(job: dict[str, Any], now: datetime, nonce: str = "") -> str:
    """A job's page for ``GET /jobs/{id}``'s answer (the Job plus its runs)."""
    home = "../../"
    fires = [moment(t.isoformat(), now) for t in fire_times(job, now)]
    return templates.get_template("job.html").render(
        page="job",
        home=home,
        nonce=nonce,
        rendered=f"rendered {now.astimezone(UTC):%H:%M:%S} UTC",
        api_url=home + "jobs/" + quote(str(job.get("id")), safe=""),
        job=job,
        row=job_row(job, now),
        spec=spec_items(job, now),
        fires=fires,
        runs=run_views(job.get("runs") or (), now),
    )


def _engine(request: Request) -> Any:
    engine = getattr(request.app.state, "engine", None)
    if engine is None:
        raise HTTPException(503, "the schedctl engine is not attached to this app")
    return engine


def _gzip_ok(request: Request) -> bool:
    for part in request.headers.get("accept-encoding", "").split(","):
        name, _, params = part.strip().partition(";")
        if name.strip().lower() == "gzip":
            return params.replace(" ", "").lower() not in {"q=0", "q=0.0", "q=0.00", "q=0.000"}
    return False


def _encode(html: str, gzip_ok: bool) -> tuple[bytes, dict[str, str]]:
    body = html.encode()
    if gzip_ok and len(body) > GZIP_OVER:
        return gzip.compress(body, 4), {"Content-Encoding": "gzip", "Vary": "Accept-Encoding"}
    return body, {"Vary": "Accept-Encoding"}


async def _page(request: Request, render: Any, *args: Any, status_code: int = 200) -> Response:
    """Render (and compress) off the event loop: a big page would delay due runs."""
    nonce = secrets.token_urlsafe(16)
    gzip_ok = _gzip_ok(request)

    def build() -> tuple[bytes, dict[str, str]]:
        return _encode(render(*args, nonce=nonce), gzip_ok)

    body, extra = await asyncio.to_thread(build)
    return Response(
        body,
        status_code=status_code,
        headers={**_headers(nonce), **extra},
        media_type="text/html; charset=utf-8",
    )


@router.api_route("/", methods=_READ, response_class=HTMLResponse, include_in_schema=False)
async def status_page(request: Request) -> Response:
    engine = _engine(request)
    jobs = await engine.jobs_async()  # built off the loop when large, cached while unchanged
    return await _page(request, render_status, jobs, engine.status(), datetime.now(UTC))


@router.api_route(JOB_PAGE, methods=_READ, response_class=HTMLResponse, include_in_schema=False)
async def job_page(job_id: str, request: Request) -> Response:
    job = _engine(request).job(job_id)
    if job is None:
        return await _page(request, render_missing, job_id, status_code=404)
    return await _page(request, render_job, job, datetime.now(UTC))


def render_missing(job_id: str, nonce: str = "") -> str:
    """The page for a job id the engine does not know."""
    return templates.get_template("missing.html").render(
        page="missing", home="../../", nonce=nonce, rendered="", job_id=job_id
    )
