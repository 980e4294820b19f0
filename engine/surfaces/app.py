"""The engine inside a FastAPI app: lifespan, ``app.state.scheduler``, extensions.

Use ``create_app()`` for a ready app, or put ``lifespan(...)`` and ``router`` into your
own (see the README). Extensions named in ``ENGINE_EXTENSIONS`` may define
``set_app(app)`` (called first) and ``async init_tasks(config)`` (awaited after the
scheduler starts and the first reconcile, before ``/readyz`` turns ready).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import signal
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI

from engine.core.engine import VERSION, Engine
from engine.settings import Settings
from engine.surfaces import aps, page
from engine.surfaces.hosts import HostCheck
from engine.surfaces.http import router
from engine.surfaces.runtime_api import Scheduler

__all__ = ["create_app", "lifespan"]

log = logging.getLogger("schedctl")


def lifespan(
    settings: Settings | None = None,
    extensions: Mapping[str, Mapping[str, Any]] | None = None,
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """A FastAPI lifespan that runs the engine for as long as the app runs."""

    @asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[None]:
        engine = Engine(settings or Settings.from_env())
        app.state.engine = engine
        app.state.scheduler = Scheduler(engine)
        chosen = dict(engine.settings.extensions if extensions is None else extensions)
        modules = {name: importlib.import_module(name) for name in chosen}
        for module in modules.values():
            if hasattr(module, "set_app"):
                module.set_app(app)
        await engine.start()
        aps.bind(app.state.scheduler)
        loop = asyncio.get_running_loop()
        hup = engine.settings.tune_process  # a signal handler is process-wide: opt-in
        if hup:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signal.SIGHUP, engine.request_reconcile)
        try:
            for name, module in modules.items():
                if hasattr(module, "init_tasks"):
                    await module.init_tasks(dict(chosen[name]))
            engine.ready = True
            log.info(
                "schedctl %s ready: %d jobs, revision %s.",
                VERSION,
                len(engine.facade.catalog),
                engine.revision,
            )
            yield
        finally:
            if hup:
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.remove_signal_handler(signal.SIGHUP)
            aps.unbind(app.state.scheduler)
            await engine.stop()

    return run


def create_app(
    settings: Settings | None = None,
    extensions: Mapping[str, Mapping[str, Any]] | None = None,
) -> FastAPI:
    """A FastAPI app serving the status API with the engine in its lifespan.

    It answers only requests for the bound host, ``localhost``, loopback addresses and
    ``allowed_hosts`` (``engine.surfaces.hosts``). ``/docs``, ``/redoc`` and
    ``/openapi.json`` are served only with ``api_docs`` (their pages load scripts from a
    CDN); ``app.openapi()`` describes the API either way.
    """
    settings = settings or Settings.from_env()
    docs = settings.api_docs
    app = FastAPI(
        title="schedctl",
        version=VERSION,
        description="The read-only status API of a schedctl engine.",
        lifespan=lifespan(settings, extensions),
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.include_router(router)
    app.include_router(page.router)
    app.add_middleware(HostCheck, bound=settings.host, allowed=settings.allowed_hosts)
    return app
