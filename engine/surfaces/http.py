"""The read-only HTTP status API, as a FastAPI router mountable into any app.

The router finds the engine on ``request.app.state.engine``. Every path answers GET and
HEAD (HEAD is left out of the OpenAPI description, which documents GET); any other
method gets 405. Answers are the engine's read models sent as JSON as they are, with
every value JSON cannot hold shown as its ``repr``, so no stored value can make a read
fail; ``engine.surfaces.models`` describes them for ``/openapi.json``.

The router does not check the ``Host`` header: ``create_app()`` installs that check
(``engine.surfaces.hosts``), and an app that mounts the router decides for itself.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.background import BackgroundTask
from starlette.responses import StreamingResponse

from engine.core.engine import Body, Engine
from engine.core.memory import LARGE_ANSWER
from engine.jsontext import dumps
from engine.redact import redact_job
from engine.surfaces.models import (
    RUN_STATUSES,
    Detail,
    Events,
    Explanation,
    Health,
    JobDetail,
    JobList,
    Ready,
    Specs,
    Status,
)

__all__ = ["router"]

router = APIRouter()
SOURCES = ("declared", "runtime")
_NOT_FOUND = {404: {"model": Detail, "description": "no such job"}}
_BAD_REQUEST = {400: {"model": Detail, "description": "a malformed filter"}}
_UNHEALTHY = {503: {"model": Health, "description": "a due run waits beyond stall_after"}}
_NOT_READY = {503: {"model": Ready, "description": "starting, or the database is unreachable"}}
_EXPLAIN = {
    404: {"model": Detail, "description": "no such job, now or in the audit log"},
}
_METRICS = {200: {"content": {"text/plain": {"schema": {"type": "string"}}}}}


def _read(path: str, **options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """GET ``path`` (documented) and HEAD ``path`` (the same answer without its body)."""

    def register(endpoint: Callable[..., Any]) -> Callable[..., Any]:
        router.add_api_route(path, endpoint, methods=["GET"], **options)
        router.add_api_route(path, endpoint, methods=["HEAD"], include_in_schema=False)
        return endpoint

    return register


def _engine(request: Request) -> Engine:
    engine = getattr(request.app.state, "engine", None)
    if engine is None:
        raise HTTPException(503, "the schedctl engine is not attached to this app")
    return engine


@_read("/healthz", response_model=Health, responses=_UNHEALTHY)
async def healthz(request: Request) -> Response:
    engine = getattr(request.app.state, "engine", None)
    lag = engine.loop_lag_ms() if engine is not None else 0.0
    if engine is not None and engine.stalled():
        return json_response({"status": "stalled", "loop_lag_ms": lag}, status_code=503)
    return json_response({"status": "ok", "loop_lag_ms": lag})


@_read("/readyz", response_model=Ready, responses=_NOT_READY)
async def readyz(request: Request) -> Response:
    engine = getattr(request.app.state, "engine", None)
    if engine is None:
        return json_response({"status": "starting"}, status_code=503)
    ready, why = engine.readiness()
    return json_response({"status": why}, status_code=200 if ready else 503)


@_read("/jobs", response_model=JobList, responses=_BAD_REQUEST)
async def jobs(
    request: Request,
    source: Annotated[
        str | None, Query(description="declared or runtime", json_schema_extra={"enum": SOURCES})
    ] = None,
    label: Annotated[
        list[str],
        Query(
            description="KEY=VALUE; repeatable, all must match",
            json_schema_extra={"items": {"type": "string", "pattern": "^[^=]+="}},
        ),
    ] = [],  # noqa: B006 - FastAPI copies a default list per request
    status: Annotated[
        str | None,
        Query(
            description="the last finished run's status",
            json_schema_extra={"enum": RUN_STATUSES},
        ),
    ] = None,
    file: Annotated[str | None, Query(description="the job's file starts with this")] = None,
) -> Response:
    engine = _engine(request)
    keep = _job_filter(source, label, status, file)
    if not (source or label or status or file):  # the whole list: cached, 304 when unchanged
        tag, body = await engine.jobs_body()
        if _not_modified(request, tag):
            return _unchanged(tag)
        return _answer(engine, body, "application/json", {"ETag": tag})
    tag = engine.views.etag("jobs", request.url.query)
    if _not_modified(request, tag):
        return _unchanged(tag)
    found = [job for job in await engine.jobs_async() if keep(job)]
    return json_response({"count": len(found), "jobs": found}, headers={"ETag": tag})


def _job_filter(
    source: str | None, labels: list[str], status: str | None, file: str | None
) -> Callable[[Mapping[str, Any]], bool]:
    """The predicate of ``/jobs``'s filters; 400 for a malformed one."""
    if source is not None and source not in SOURCES:
        raise HTTPException(400, f"unknown source {_short(source)}; use declared or runtime")
    if status is not None and status not in RUN_STATUSES:
        raise HTTPException(
            400, f"unknown status {_short(status)}; use one of {', '.join(RUN_STATUSES)}"
        )
    wanted: list[tuple[str, str]] = []
    for item in labels:
        key, equals, value = item.partition("=")
        if not equals or not key:
            raise HTTPException(400, f"label filter {_short(item)} is not KEY=VALUE")
        wanted.append((key, value))

    def keep(job: Mapping[str, Any]) -> bool:
        if source is not None and job.get("source") != source:
            return False
        if status is not None and (job.get("last_run") or {}).get("status") != status:
            return False
        if file is not None and not str(job.get("file") or "").startswith(file):
            return False
        # Labels are matched as shown: a masked label cannot be probed by its value.
        shown = job.get("labels") or {}
        return all(shown.get(key) == value for key, value in wanted)

    return keep


@_read("/jobs/{job_id}", response_model=JobDetail, responses=_NOT_FOUND)
async def job(job_id: str, request: Request) -> Response:
    engine = _engine(request)
    tag = engine.views.etag("job", job_id)
    if job_id in engine.facade.catalog and _not_modified(request, tag):
        return _unchanged(tag)
    found = engine.job(job_id)
    if found is None:
        raise HTTPException(404, f"no job with id {_short(job_id)}")
    return json_response(redact_job(found), headers={"ETag": tag})


@_read("/jobs/{job_id}/explain", response_model=Explanation, responses=_EXPLAIN)
async def explain(
    job_id: str,
    request: Request,
    at: Annotated[
        datetime | None,
        Query(description="ISO 8601 (default now); without an offset, in the job's zone"),
    ] = None,
) -> Response:
    """Why the job did or did not run at ``at``."""
    when = at if at is not None else datetime.now(UTC)
    found = await _engine(request).explain(job_id, when)
    if found is None:
        raise HTTPException(404, f"no job with id {_short(job_id)}")
    return json_response(found)


@_read("/status", response_model=Status)
async def status(request: Request) -> Response:
    body = dumps(_engine(request).status())
    tag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
    if _not_modified(request, tag):
        return _unchanged(tag)
    return Response(body, media_type="application/json", headers={"ETag": tag})


@_read("/events", response_model=Events)
async def events(
    request: Request,
    limit: Annotated[int, Query(description="how many, newest first (at most 1,000)")] = 100,
) -> Response:
    """The audit log, newest first: the newest 1,000 events are kept."""
    return json_response({"events": await _engine(request).events(max(1, min(limit, 1000)))})


@_read("/specs", response_model=Specs)
async def specs(request: Request) -> Response:
    """Canonical specs and fingerprints of every job (secrets masked), and digests of
    their secrets: for ``schedctl plan``."""
    engine = _engine(request)
    return _answer(engine, await engine.specs_body(), "application/json")


@_read("/metrics", response_class=Response, responses=_METRICS)
async def metrics(request: Request) -> Response:
    engine = _engine(request)
    return _answer(engine, await engine.metrics_body(), CONTENT_TYPE_LATEST)


def _answer(
    engine: Engine, body: Body, media_type: str, headers: dict[str, str] | None = None
) -> Response:
    """``body`` as the answer. A body in pieces is sent piece by piece, with its length
    said first: the loop never copies it whole, and waits for the client between pieces.
    A large answer gives what building it freed back to the system once it is sent
    (``engine.core.memory``)."""
    response: Response
    if isinstance(body, bytes):
        size = len(body)
        response = Response(body, media_type=media_type, headers=headers)
    else:
        size = sum(map(len, body))
        headers = {**(headers or {}), "Content-Length": str(size)}
        response = StreamingResponse(_in_chunks(body), media_type=media_type, headers=headers)
    if size >= LARGE_ANSWER:
        response.background = BackgroundTask(_trim_soon, engine)
    return response


CHUNK = 1 << 18  # bytes: pieces smaller than this are sent together


async def _in_chunks(pieces: list[bytes]) -> AsyncIterator[bytes]:
    """The pieces in chunks of about ``CHUNK`` bytes, the loop free between two: a
    client that reads as fast as it is sent never makes the send wait, and 50 MB sent
    without a pause held the loop 25 ms."""
    waiting: list[bytes] = []
    size = 0
    for piece in pieces:
        waiting.append(piece)
        size += len(piece)
        if size >= CHUNK:
            yield waiting[0] if len(waiting) == 1 else b"".join(waiting)
            waiting, size = [], 0
            await asyncio.sleep(0)
    if waiting:
        yield b"".join(waiting)


async def _trim_soon(engine: Engine) -> None:  # async: it runs on the loop, not a thread
    engine.trimmer.soon()


# -- JSON that never fails ----------------------------------------------------------------


def json_response(
    content: Any, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        dumps(content), status_code=status_code, media_type="application/json", headers=headers
    )


def _not_modified(request: Request, tag: str) -> bool:
    """The request's ``If-None-Match`` names ``tag`` (or is ``*``)."""
    given = request.headers.get("if-none-match")
    if not given:
        return False
    wanted = {part.strip().removeprefix("W/") for part in given.split(",")}
    return "*" in wanted or tag in wanted


def _unchanged(tag: str) -> Response:
    return Response(status_code=304, headers={"ETag": tag})


def _short(text: str, limit: int = 200) -> str:
    """``repr`` of a value from a request, cut so an answer never echoes megabytes."""
    return repr(text if len(text) <= limit else text[:limit] + "...")
