"""Task paths (``pkg.module:function`` or ``pkg.module.function``) resolved to functions.

One resolver for everything that turns a name into code: a declared job's task (checked
by the loader on every reconcile, and resolved again to run it), a Celery job's task, a
runtime job saved in the database. A schedule file or a database row is input we do not
trust, so a path must resolve, segment by segment, to a plain public function of a module
under an allowed prefix (runtime jobs: of any module outside the standard library):

- every segment is a public identifier: no dunder or private names (``tasks:__setattr__``
  would let a file rewrite the package's ``__path__``);
- every module of the path is a module whose file sits where its dotted name says
  (``tasks/os.py`` for ``tasks.os``), checked before it is imported: a package whose
  search path was tampered with cannot pass the standard library off as task code;
- the attribute is one name, read from the module: no modules, classes or objects are
  reached through attributes;
- the object is a function written in Python (``def`` or ``async def``), or, for
  ``executor: celery``, a Celery task. Builtins and C functions (``os.system``),
  classes, modules, ``functools.partial`` objects and bound methods are refused.
  A function re-exported by a task module (``from mylib.jobs import cleanup``) is
  allowed, unless it was defined in the standard library (``from shutil import rmtree``
  is refused: those are exactly the functions a hostile file wants).

A module that is missing is told apart from a module that fails while importing
something else (uvicorn's importer does the same): the second is reported as itself.
Task code is imported once per process; a module file that changed on disk since is
noticed (``changed_since_import``), so an error can say that a restart loads it.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import os
import re
import sys
import types
from collections.abc import Callable, Sequence
from pathlib import PurePath
from typing import Any

from engine.errors import TaskError

__all__ = [
    "allowed",
    "changed_since_import",
    "ensure_cwd_on_path",
    "resolve_runtime",
    "resolve_task",
    "signature_problem",
    "split_task",
]

_STDLIB = frozenset(sys.stdlib_module_names) | {"builtins", "__main__"}
# Each module file's (mtime_ns, size) when the resolver first met the module object that
# was imported from it (keyed by the object's id: a module imported afresh is met anew).
_stamps: dict[str, tuple[int, tuple[int, int]]] = {}


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


def resolve_task(
    path: str, prefixes: Sequence[str] | None, *, celery: bool = False
) -> Callable[..., Any]:
    """The function ``path`` names; TaskError says what is wrong and what to write.

    ``prefixes`` are the allowed module prefixes (the ``task_modules`` setting); None
    allows any module outside the standard library (runtime jobs, which the application
    added in code). ``celery`` also accepts a Celery task (``executor: celery``).
    """
    module_name, attr = split_task(path)
    if not module_name or not attr:
        raise TaskError(f"task {path!r} is not a dotted path; write 'package.module:function'")
    if "." in attr:
        raise TaskError(
            f"task {path!r} reaches through {attr.split('.')[0]!r}: name one function defined "
            "at the top of the module, as 'package.module:function'"
        )
    segments = module_name.split(".")
    for segment in (*segments, attr):
        if not segment.isidentifier():
            raise TaskError(
                f"task {path!r} is not a dotted path of names ({segment!r}); write "
                "'package.module:function', naming a function defined at the top of the module"
            )
        if segment.startswith("_"):
            raise TaskError(
                f"task {path!r} names {segment!r}: private and dunder names are refused; "
                "name a public function ('package.module:function')"
            )
    if prefixes is None:
        if segments[0] in _STDLIB:
            raise TaskError(f"task {path!r} is in the standard library; refusing to run it")
    elif not allowed(module_name, prefixes):
        allowed_text = ", ".join(repr(p) for p in prefixes)
        raise TaskError(
            f"task module {module_name!r} is outside the allowed prefixes ({allowed_text}); "
            "move the task under one of them or add its package to the task_modules setting "
            "(ENGINE_TASK_MODULES)"
        )
    module = _import(module_name)
    target = getattr(module, attr, None)
    if target is None:
        names = [n for n in dir(module) if not n.startswith("_") and _is_function(module, n)]
        close = difflib.get_close_matches(attr, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise TaskError(
            f"module {module_name!r} has no callable {attr!r}{hint}{_restart_hint(module)}"
        )
    _check_target(f"{module_name}:{attr}", target, celery, module)
    return target


def resolve_runtime(reference: str) -> Callable[..., Any]:
    """The function a saved runtime job names (``module:function``): the same rules as a
    declared task, in any module outside the standard library."""
    return resolve_task(reference, None)


def changed_since_import(module_name: str) -> str | None:
    """The file of an imported module when it changed on disk since the engine imported
    it (the running code is the old one), else None."""
    module = sys.modules.get(module_name)
    file = getattr(module, "__file__", None) if module is not None else None
    if not isinstance(file, str):
        return None
    seen = _stamps.get(file)
    if seen is None or seen[0] != id(module):
        return None
    now = _stat(file)
    return file if now is not None and now != seen[1] else None


def signature_problem(
    path: str, target: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]
) -> tuple[str, str | None, str] | None:
    """Whether ``target`` can be called with ``args`` and ``kwargs``, binding them as a
    call would: None, or (field, kwarg name or None, message) of what cannot be bound.

    Functions without an inspectable signature are not checked. Messages never show an
    argument's value, only names.
    """
    func: Any = target
    if not inspect.isfunction(func):
        func = getattr(func, "run", None)  # a Celery task: its function
        if func is None:
            return None
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return None
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        reason = str(exc)
    else:
        return None
    shape = _shape(signature)
    quoted = re.search(r"'([^']*)'", reason)
    name = quoted.group(1) if quoted else None
    param = signature.parameters.get(name) if name is not None else None
    restart = _restart_hint(sys.modules.get(split_task(path)[0]))
    if reason.startswith("too many positional"):
        taken = sum(
            p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            for p in signature.parameters.values()
        )
        plural = "s" if taken != 1 else ""
        return (
            "args",
            None,
            f"{path}{shape} takes {taken} positional argument{plural}, not {len(args)}; "
            f"pass at most {taken} in args{restart}",
        )
    positional_only = param is not None and param.kind is param.POSITIONAL_ONLY
    if name is not None and positional_only and "keyword" in reason:
        return (
            "kwargs",
            name,
            f"{path}{shape} takes {name!r} only by position; move it to args{restart}",
        )
    if reason.startswith("got an unexpected keyword") and name is not None:
        names = [
            p.name
            for p in signature.parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        close = difflib.get_close_matches(name, names, n=1)
        instead = f"did you mean {close[0]!r}?" if close else "remove it from kwargs"
        return ("kwargs", name, f"{path}{shape} has no parameter {name!r}; {instead}{restart}")
    if reason.startswith("multiple values") and name is not None:
        return (
            "kwargs",
            name,
            f"{path}{shape} gets {name!r} twice, by position in args and by name in kwargs; "
            f"remove one{restart}",
        )
    if reason.startswith("missing a required") and name is not None:
        if param is not None and param.kind is param.KEYWORD_ONLY:
            field, where = "kwargs", f"add {name}: ... to kwargs"
        elif param is not None and param.kind is param.POSITIONAL_ONLY:
            field, where = "args", "add it to args"
        else:
            field = "args" if args or not kwargs else "kwargs"
            where = f"add it to args, or {name}: ... to kwargs"
        return (field, None, f"{path}{shape} needs the argument {name!r}; {where}{restart}")
    return (
        "args" if args else "kwargs",
        None,
        f"{path}{shape} cannot take these arguments ({reason}); "
        f"write args and kwargs that match its parameters{restart}",
    )


# -- internals -----------------------------------------------------------------------------


def _import(module_name: str) -> types.ModuleType:
    """Import ``module_name`` package by package, checking each module's file before its
    code runs; TaskError for a missing module, a failing one, or one from elsewhere."""
    parts = module_name.split(".")
    module: types.ModuleType | None = None
    for end in range(1, len(parts) + 1):
        name = ".".join(parts[:end])
        found = sys.modules.get(name)
        if found is None:
            found = _import_one(name, module_name)
        _check_module(name, found)
        _stamp(found)
        module = found
    assert module is not None
    return module


def _import_one(name: str, wanted: str) -> types.ModuleType:
    spec = None
    for retry in (False, True):
        if retry:
            # A module created after the engine started: the import system caches
            # directory listings, so look again before calling it missing.
            importlib.invalidate_caches()
        try:
            spec = importlib.util.find_spec(name)
        except ModuleNotFoundError:
            spec = None
        except (Exception, SystemExit) as exc:
            raise _failed(wanted, exc) from None
        if spec is not None:
            break
    if spec is None:
        raise TaskError(
            f"task module {wanted!r} not found; check the path (tasks are imported "
            "from the current directory)"
        )
    _check_origin(name, spec.origin, spec.submodule_search_locations is not None)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (wanted == exc.name or wanted.startswith(exc.name + ".")):
            raise TaskError(
                f"task module {wanted!r} not found; check the path (tasks are imported "
                "from the current directory)"
            ) from None
        raise _failed(wanted, exc) from None
    except (Exception, SystemExit) as exc:  # a module calling sys.exit() must not end us
        raise _failed(wanted, exc) from None


def _failed(module_name: str, exc: BaseException) -> TaskError:
    return TaskError(f"task module {module_name!r} failed to import: {type(exc).__name__}: {exc}")


def _check_module(name: str, module: object) -> None:
    """``sys.modules[name]`` is that module, loaded from where its name says."""
    if not isinstance(module, types.ModuleType) or module.__name__ != name:
        raise TaskError(f"{name!r} in sys.modules is not the module {name!r}; refusing it")
    spec = getattr(module, "__spec__", None)
    origin = getattr(spec, "origin", None) if spec is not None else None
    package = hasattr(module, "__path__")
    _check_origin(
        name, origin if origin is not None else getattr(module, "__file__", None), package
    )


def _check_origin(name: str, origin: object, package: bool) -> None:
    """A module's file must be where its dotted name says: ``a/b/c.py`` (or
    ``a/b/c/__init__.py``) for ``a.b.c``. A namespace package (no file) has no code."""
    if origin is None:
        if package:
            return
        raise TaskError(f"module {name!r} has no file; task modules are Python files")
    if not isinstance(origin, str) or origin in ("built-in", "frozen"):
        raise TaskError(f"module {name!r} is built into Python; refusing it")
    file = PurePath(origin)
    parts = name.split(".")
    stem = file.name.split(".")[0]
    where = file.parent.parts if stem == "__init__" else (*file.parent.parts, stem)
    if tuple(where[-len(parts) :]) != tuple(parts):
        raise TaskError(
            f"module {name!r} was loaded from {origin}, not from its own package; "
            "refusing it (was the package's search path changed?)"
        )


def _check_target(path: str, target: object, celery: bool, module: types.ModuleType) -> None:
    if inspect.isfunction(target):
        defined = getattr(target, "__module__", None)
        if not isinstance(defined, str) or defined.split(".")[0] in _STDLIB:
            raise TaskError(
                f"{path} is {_defined(target)}, from the standard library; tasks call your "
                "own code: write a function in the task module that calls it"
            )
        return
    if celery and _is_celery_task(target):
        return
    if isinstance(target, types.ModuleType):
        kind = "a module"
    elif isinstance(target, type):
        kind = "a class"
    elif isinstance(target, types.BuiltinFunctionType | types.BuiltinMethodType):
        kind = "a builtin function"
    elif _is_celery_task(target):
        raise TaskError(f"{path} is a Celery task; use executor: celery, or name a plain function")
    else:
        kind = f"a {type(target).__name__}"
    raise TaskError(
        f"{path} is {kind}, not a function; name a function defined with def or async def "
        f"in a task module{_restart_hint(module)}"
    )


def _is_function(module: types.ModuleType, name: str) -> bool:
    return inspect.isfunction(getattr(module, name, None))


def _is_celery_task(target: object) -> bool:
    """Without importing Celery: its tasks exist only once Celery is imported."""
    task_module = sys.modules.get("celery.app.task")
    base = getattr(task_module, "Task", None)
    return isinstance(base, type) and isinstance(target, base)


def _defined(target: Any) -> str:
    return f"{target.__module__}.{target.__qualname__}"


def _shape(signature: inspect.Signature) -> str:
    """``(a, /, b=…, *, c=…)``: the parameters' names, never a default's value."""
    shown = []
    star = slash = False
    for param in signature.parameters.values():
        if param.kind is not param.POSITIONAL_ONLY and slash:
            shown.append("/")
            slash = False
        text = param.name
        if param.kind is param.POSITIONAL_ONLY:
            slash = True
        elif param.kind is param.VAR_POSITIONAL:
            text, star = f"*{param.name}", True
        elif param.kind is param.VAR_KEYWORD:
            text = f"**{param.name}"
        elif param.kind is param.KEYWORD_ONLY and not star:
            shown.append("*")
            star = True
        if param.default is not param.empty:
            text += "=…"
        shown.append(text)
    if slash:
        shown.append("/")
    return f"({', '.join(shown)})"


def _stat(file: str) -> tuple[int, int] | None:
    try:
        found = os.stat(file)
    except OSError:
        return None
    return (found.st_mtime_ns, found.st_size)


def _stamp(module: types.ModuleType) -> None:
    file = getattr(module, "__file__", None)
    if not isinstance(file, str):
        return
    seen = _stamps.get(file)
    if seen is None or seen[0] != id(module):
        stamp = _stat(file)
        if stamp is not None:
            _stamps[file] = (id(module), stamp)


def _restart_hint(module: types.ModuleType | None) -> str:
    if module is None:
        return ""
    file = changed_since_import(module.__name__)
    if file is None:
        return ""
    shown = os.path.relpath(file)
    return (
        f" ({file if shown.startswith('..') else shown} changed on disk since the engine "
        "imported it; restart the engine to load the new code)"
    )
