"""Task paths (``pkg.module:function`` or ``pkg.module.function``) resolved to callables.

A module that is missing is told apart from a module that fails while importing
something else (uvicorn's importer does the same): the second is reported as itself.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from engine.errors import TaskError

__all__ = ["allowed", "ensure_cwd_on_path", "resolve_task", "split_task"]


def split_task(path: str) -> tuple[str, str]:
    """``"a.b:f"`` and ``"a.b.f"`` both give ``("a.b", "f")``."""
    if ":" in path:
        module, _, attr = path.partition(":")
    else:
        module, _, attr = path.rpartition(".")
    return module, attr


def allowed(module: str, prefixes: Sequence[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def ensure_cwd_on_path() -> None:
    """Put the current directory first on the import path, as ``python -m`` does."""
    cwd = os.getcwd()
    if not sys.path or sys.path[0] not in ("", cwd):
        sys.path.insert(0, cwd)


def resolve_task(path: str, prefixes: Sequence[str]) -> Callable[..., Any]:
    """Import the module of ``path`` and return its callable; TaskError says what is wrong."""
    module_name, attr = split_task(path)
    if not module_name or not attr:
        raise TaskError(f"task {path!r} is not a dotted path; write 'package.module:function'")
    if not allowed(module_name, prefixes):
        allowed_text = ", ".join(repr(p) for p in prefixes)
        raise TaskError(
            f"task module {module_name!r} is outside the allowed prefixes ({allowed_text}); "
            "move the task under one of them or add its package to the task_modules setting "
            "(ENGINE_TASK_MODULES)"
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise TaskError(
                f"task module {module_name!r} not found; check the path (tasks are imported "
                "from the current directory)"
            ) from None
        raise TaskError(
            f"task module {module_name!r} failed to import: ModuleNotFoundError: {exc}"
        ) from None
    except (Exception, SystemExit) as exc:  # a module calling sys.exit() must not end us
        raise TaskError(
            f"task module {module_name!r} failed to import: {type(exc).__name__}: {exc}"
        ) from None
    target = getattr(module, attr, None)
    if target is None:
        names = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
        close = difflib.get_close_matches(attr, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise TaskError(f"module {module_name!r} has no callable {attr!r}{hint}")
    if not callable(target):
        raise TaskError(f"{module_name}:{attr} is a {type(target).__name__}, not a callable")
    return target


def resolve_runtime(reference: str) -> Callable[..., Any]:
    """The function a saved runtime job names (``module:qualname``), refusing anything a
    crafted database row could use to run code: private or dunder names, builtins,
    classes, the standard library."""
    import inspect

    module_name, _, qualname = reference.partition(":")
    parts = [*module_name.split("."), *qualname.split(".")]
    if not module_name or not qualname or any(not p or p.startswith("_") for p in parts):
        raise TaskError(f"task {reference!r} is not a public 'module:function' reference")
    if module_name.split(".")[0] in sys.stdlib_module_names or module_name == "builtins":
        raise TaskError(f"task {reference!r} is in the standard library; refusing to run it")
    try:
        target: Any = importlib.import_module(module_name)
    except (Exception, SystemExit) as exc:
        raise TaskError(
            f"task module {module_name!r} failed to import: {type(exc).__name__}: {exc}"
        ) from None
    for part in qualname.split("."):
        target = getattr(target, part, None)
        if target is None or inspect.ismodule(target):
            raise TaskError(f"{reference!r} does not name a function")
    if not (inspect.isfunction(target) or inspect.ismethod(target)):
        raise TaskError(f"{reference!r} is a {type(target).__name__}, not a function")
    return target
