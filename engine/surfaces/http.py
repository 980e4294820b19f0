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

import json
import math
import reprlib
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from engine.core.engine import Engine
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
    keep = _job_filter(source, label, status, file)
    found = [job for job in await _engine(request).jobs_async() if keep(job)]
    return json_response({"count": len(found), "jobs": found})


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
    found = _engine(request).job(job_id)
    if found is None:
        raise HTTPException(404, f"no job with id {_short(job_id)}")
    return json_response(redact_job(found))


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
    return json_response(_engine(request).status())


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
    return json_response(_engine(request).specs())


@_read("/metrics", response_class=Response, responses=_METRICS)
async def metrics(request: Request) -> Response:
    return Response(_engine(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)


# -- JSON that never fails ----------------------------------------------------------------


def json_response(content: Any, status_code: int = 200) -> Response:
    return Response(dumps(content), status_code=status_code, media_type="application/json")


def dumps(content: Any) -> bytes:
    """``content`` as compact UTF-8 JSON; a value JSON cannot hold is its ``repr``."""
    try:
        text = json.dumps(
            content, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_shown
        )
        return text.encode("utf-8")
    except (ValueError, TypeError, RecursionError):  # NaN, a bad key, a lone surrogate ...
        text = json.dumps(
            _jsonable(content, 0), ensure_ascii=False, allow_nan=False, separators=(",", ":")
        )
        return text.encode("utf-8")


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 1000
_REPR.maxlevel = 8
_MAX_DEPTH = 64


def _shown(value: Any) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    try:
        return _REPR.repr(value)
    except Exception:  # a __repr__ that raises, an int too long to print
        return f"<{type(value).__name__} that cannot be shown>"


def _jsonable(value: Any, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        return _shown(value)
    if isinstance(value, str):
        return value if _encodable(value) else _shown(value)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if value.bit_length() < 4000 else _shown(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else _shown(value)
    if isinstance(value, Mapping):
        return {
            (k if isinstance(k, str) and _encodable(k) else _shown(k)): _jsonable(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_jsonable(v, depth + 1) for v in value]
    return _shown(value)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _short(text: str, limit: int = 200) -> str:
    """``repr`` of a value from a request, cut so an answer never echoes megabytes."""
    return repr(text if len(text) <= limit else text[:limit] + "...")
