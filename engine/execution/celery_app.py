"""The user's Celery app (``ENGINE_CELERY_APP=module:attribute``): loaded once, asked about tasks.

Celery is an optional dependency: nothing here imports it until a job needs it. The app
is imported from the current directory, like task code, the first time a job with
``executor: celery`` is checked (the first reconcile, at start, or ``schedctl
validate``). A job's ``task`` is the same dotted path as for a local run; for Celery it
must name a task of that app (a function decorated with ``@app.task``), whose registered
``name`` is what the engine sends.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable
from typing import Any

from engine.errors import TaskError

__all__ = ["SETTING", "CeleryApp", "celery_app_setting"]

SETTING = "ENGINE_CELERY_APP"


def celery_app_setting(settings: Any) -> str | None:
    """The setting's value (``module:attribute``) from the settings or the environment."""
    value = getattr(settings, "celery_app", None) or os.environ.get(SETTING)
    if not value:
        return None
    return str(value).strip() or None


class CeleryAppError(TaskError):
    """The Celery app named by the setting cannot be used."""


class CeleryApp:
    """One Celery app, imported on first use; thread-safe."""

    def __init__(self, path: str | None, resolve: Callable[[str], Any]) -> None:
        self.path = path
        self._resolve = resolve  # a job's task path -> the object it names (allowed prefixes)
        self._lock = threading.Lock()
        self._app: Any = None
        self._error: str | None = None
        self._names: dict[str, str] = {}

    @property
    def loaded(self) -> bool:
        return self._app is not None

    def app(self) -> Any:
        """The app, imported once; ``CeleryAppError`` saying what to fix otherwise."""
        with self._lock:
            if self._app is None:
                if self._error is not None:
                    raise CeleryAppError(self._error)
                try:
                    self._app = self._load()
                except CeleryAppError as exc:
                    self._error = str(exc)
                    raise
            return self._app

    def _load(self) -> Any:
        path = self.path
        if not path:
            raise CeleryAppError(
                f"executor: celery needs a Celery app: set {SETTING}=module:attribute "
                "(e.g. tasks.celery_app:app), or use executor: local"
            )
        module_name, _, attr = path.partition(":")
        if not module_name or not attr:
            raise CeleryAppError(
                f"{SETTING}={path!r} is not 'module:attribute'; write e.g. tasks.celery_app:app"
            )
        try:
            import celery
        except ImportError:
            raise CeleryAppError(
                "executor: celery needs Celery installed: pip install 'schedctl[celery]'"
            ) from None
        try:
            module = importlib.import_module(module_name)
        except (Exception, SystemExit) as exc:
            raise CeleryAppError(
                f"{SETTING}={path!r}: module {module_name!r} failed to import: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        app = getattr(module, attr, None)
        if not isinstance(app, celery.Celery):
            raise CeleryAppError(
                f"{SETTING}={path!r} is a {type(app).__name__}, not a Celery app; name the "
                "object made by Celery(...)"
            )
        _short_timeouts(app)
        return app

    def task_name(self, task_path: str) -> str:
        """The registered name of the Celery task a job's ``task`` names."""
        found = self._names.get(task_path)
        if found is not None:
            return found
        app = self.app()
        target = self._resolve(task_path)
        name = getattr(target, "name", None)
        if not isinstance(name, str) or name not in app.tasks:
            raise TaskError(
                f"{task_path} is not a task of the Celery app {self.path}: decorate it with "
                f"@app.task (the app of {SETTING}), or use executor: local"
            )
        self._names[task_path] = name
        return name

    def problem(self, task_path: str) -> tuple[str, str] | None:
        """For validation: (field, message) of what stops a Celery job, or None."""
        try:
            self.app()
        except CeleryAppError as exc:
            return ("executor", str(exc))
        try:
            self.task_name(task_path)
        except TaskError as exc:
            return ("task", str(exc))
        return None

    def check_job(self, spec: Any) -> tuple[str, str] | None:
        """The loader's setup check: a Celery job needs the app and a task of it."""
        if getattr(spec, "executor", "local") != "celery":
            return None
        return self.problem(spec.task)

    def forget(self) -> None:
        """Look task names up afresh (a reconcile may have brought new task code)."""
        self._names.clear()


def _short_timeouts(app: Any) -> None:
    """A broker that hangs must not hold a send for long: the engine's copy of the app
    gets short socket timeouts where the user's configuration sets none."""
    url = str(app.conf.broker_url or "")
    if url.startswith(("redis://", "rediss://", "sentinel://")):
        options = dict(app.conf.broker_transport_options or {})
        options.setdefault("socket_timeout", 5.0)
        options.setdefault("socket_connect_timeout", 3.0)
        app.conf.broker_transport_options = options
    if app.conf.broker_connection_timeout is None or app.conf.broker_connection_timeout > 4:
        app.conf.broker_connection_timeout = 4.0
