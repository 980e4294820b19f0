"""The read-only HTTP status API, as a FastAPI router mountable into any app.

The router finds the engine on ``request.app.state.engine``. Every path answers GET and
HEAD; any other method gets 405.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from engine.core.engine import Engine

__all__ = ["router"]

router = APIRouter()
_READ = ["GET", "HEAD"]


def _engine(request: Request) -> Engine:
    engine = getattr(request.app.state, "engine", None)
    if engine is None:
        raise HTTPException(503, "the schedctl engine is not attached to this app")
    return engine


@router.api_route("/healthz", methods=_READ)
async def healthz(request: Request) -> JSONResponse:
    engine = getattr(request.app.state, "engine", None)
    lag = engine.loop_lag_ms() if engine is not None else 0.0
    if engine is not None and engine.stalled():
        return JSONResponse({"status": "stalled", "loop_lag_ms": lag}, status_code=503)
    return JSONResponse({"status": "ok", "loop_lag_ms": lag})


@router.api_route("/readyz", methods=_READ)
async def readyz(request: Request) -> JSONResponse:
    engine = getattr(request.app.state, "engine", None)
    if engine is None:
        return JSONResponse({"status": "starting"}, status_code=503)
    ready, why = engine.readiness()
    return JSONResponse({"status": why}, status_code=200 if ready else 503)


@router.api_route("/jobs", methods=_READ)
async def jobs(request: Request) -> dict[str, Any]:
    found = await _engine(request).jobs_async()
    return {"count": len(found), "jobs": found}


@router.api_route("/jobs/{job_id}", methods=_READ)
async def job(job_id: str, request: Request) -> dict[str, Any]:
    found = _engine(request).job(job_id)
    if found is None:
        raise HTTPException(404, f"no job with id {job_id!r}")
    return found


@router.api_route("/jobs/{job_id}/explain", methods=_READ)
async def explain(job_id: str, request: Request, at: str | None = None) -> dict[str, Any]:
    """Why the job did or did not run at ``at`` (ISO 8601; default now)."""
    when = datetime.now(UTC)
    if at:
        try:
            when = datetime.fromisoformat(at)
        except ValueError:
            raise HTTPException(
                422, f"at={at!r} is not ISO 8601; write e.g. 2027-03-01T02:00:00+01:00"
            ) from None
    found = await _engine(request).explain(job_id, when)
    if found is None:
        raise HTTPException(404, f"no job with id {job_id!r}")
    return found


@router.api_route("/status", methods=_READ)
async def status(request: Request) -> dict[str, Any]:
    return _engine(request).status()


@router.api_route("/events", methods=_READ)
async def events(request: Request, limit: int = 100) -> dict[str, Any]:
    """The audit log, newest first: at most 1,000 events are kept."""
    return {"events": await _engine(request).events(max(1, min(limit, 1000)))}


@router.api_route("/specs", methods=_READ)
async def specs(request: Request) -> dict[str, Any]:
    """Canonical specs and fingerprints of every job (secrets redacted): for `schedctl plan`."""
    return _engine(request).specs()


@router.api_route("/metrics", methods=_READ)
async def metrics(request: Request) -> Response:
    return Response(_engine(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)
