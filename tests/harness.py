"""An engine running in-process behind an httpx client, and waiting with a deadline
(``eventually`` on a loop, ``wait_until`` in plain code)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
from fastapi import FastAPI

from engine.app import create_app
from engine.settings import Settings

T = TypeVar("T")

JOB_FIELDS = {
    "id",
    "task",
    "args",
    "kwargs",
    "trigger",
    "next_run_time",
    "paused",
    "source",
    "file",
    "line",
    "description",
    "labels",
    "running",
    "last_run",
    "executor",
    "last_success_at",
    "stale",
}
RUN_FIELDS = {
    "status",
    "scheduled_at",
    "started_at",
    "finished_at",
    "duration_s",
    "attempt",
    "error",
    "traceback",
    "logs",
    "worker",
}


async def eventually(
    predicate: Callable[[], Any | Awaitable[Any]], within: float = 5.0, what: str = ""
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {within}s: {what or predicate}")
        await asyncio.sleep(0.02)


def wait_until(predicate: Callable[[], T], within: float = 5.0, what: str = "") -> T:
    """Poll ``predicate`` until truthy; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {within}s: {what or predicate}")
        time.sleep(0.005)


def engine_settings(tmp_path: Path, package: str, shutdown_grace: float) -> Settings:
    """An unwatched engine on ``tmp_path/schedules`` with its own SQLite database."""
    schedules = tmp_path / "schedules"
    schedules.mkdir(exist_ok=True)
    return Settings(
        schedules_dir=schedules,
        database_url=f"sqlite:///{tmp_path / 'state.db'}",
        task_modules=(package,),
        watch=False,
        shutdown_grace=shutdown_grace,
    )


def parse_time(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    assert value.utcoffset() is not None, f"{text!r} has no UTC offset"
    return value


@dataclass
class Running:
    """A started app: its scheduler facade, engine and an HTTP client on its routes."""

    app: FastAPI
    client: httpx.AsyncClient

    @property
    def scheduler(self) -> Any:
        return self.app.state.scheduler

    async def get(self, path: str) -> Any:
        response = await self.client.get(path)
        assert response.status_code == 200, (path, response.status_code, response.text)
        return response.json()

    async def job(self, job_id: str) -> dict[str, Any]:
        return await self.get(f"/jobs/{job_id}")  # type: ignore[no-any-return]

    async def runs(self, job_id: str) -> list[dict[str, Any]]:
        return (await self.job(job_id))["runs"]  # type: ignore[no-any-return]

    def until_runs(
        self, job_id: str, accept: Callable[[list[dict[str, Any]]], bool], what: str = ""
    ) -> Callable[[], Awaitable[list[dict[str, Any]] | None]]:
        """A predicate for ``eventually``: the job's runs once ``accept(runs)`` holds."""

        async def check() -> list[dict[str, Any]] | None:
            runs = await self.runs(job_id)
            return runs if accept(runs) else None

        return check

    async def reconcile(self) -> dict[str, Any]:
        report = await self.app.state.engine.reconcile()
        assert report is not None
        return report  # type: ignore[no-any-return]


def client_for(app: FastAPI) -> httpx.AsyncClient:
    """An HTTP client on ``app``'s routes (its lifespan is not run)."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost")


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[Running]:
    """Run ``app``'s lifespan (the engine) with a client on it."""
    async with app.router.lifespan_context(app), client_for(app) as client:
        yield Running(app, client)


def running(settings: Settings) -> Any:
    """``async with running(settings) as engine``: a fresh ``create_app`` served."""
    return serving(create_app(settings))
