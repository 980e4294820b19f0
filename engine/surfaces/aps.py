"""Module-level runtime API bound to the running engine, for code that has no ``app``.

Discouraged, as in the original design: prefer ``request.app.state.scheduler``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = [
    "add_cron_job",
    "add_date_job",
    "add_interval_job",
    "add_job",
    "get_job",
    "get_jobs",
    "pause_job",
    "remove_job",
    "resume_job",
    "run_job",
]

_bound: Any = None


def bind(scheduler: Any) -> None:
    global _bound
    _bound = scheduler


def unbind(scheduler: Any) -> None:
    global _bound
    if _bound is scheduler:
        _bound = None


def _scheduler() -> Any:
    if _bound is None:
        raise RuntimeError("no schedctl engine is running in this process")
    return _bound


async def add_job(func: Callable[..., Any], job_id: str | None = None, **kwargs: Any) -> str:
    return await _scheduler().add_job(func, job_id, **kwargs)


async def add_cron_job(func: Callable[..., Any], job_id: str | None = None, **kwargs: Any) -> str:
    return await _scheduler().add_cron_job(func, job_id, **kwargs)


async def add_interval_job(
    func: Callable[..., Any], job_id: str | None = None, **kwargs: Any
) -> str:
    return await _scheduler().add_interval_job(func, job_id, **kwargs)


async def add_date_job(func: Callable[..., Any], job_id: str | None = None, **kwargs: Any) -> str:
    return await _scheduler().add_date_job(func, job_id, **kwargs)


async def remove_job(job_id: str) -> bool:
    return await _scheduler().remove_job(job_id)


async def pause_job(job_id: str) -> bool:
    return await _scheduler().pause_job(job_id)


async def resume_job(job_id: str) -> bool:
    return await _scheduler().resume_job(job_id)


async def run_job(job_id: str) -> bool:
    return await _scheduler().run_job(job_id)


async def get_job(job_id: str) -> dict[str, Any] | None:
    return await _scheduler().get_job(job_id)


async def get_jobs() -> list[dict[str, Any]]:
    return await _scheduler().get_jobs()
