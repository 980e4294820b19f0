"""Schedule files -> per-file results of jobs or located problems.

``Loader.scan(roots)`` finds every ``*.yaml``/``*.yml`` (recursively, following symlinks,
skipping names that start with ``.`` or end with ``~``), parses each one, and gives a
``Snapshot``: the jobs of every valid file and every problem of every invalid one, plus
the ids declared in more than one file. Parsed files are cached by content hash, so a
rescan after one edit re-parses one file; the task checks a cached result rests on are
asked again on every scan (a task module may have appeared, or changed), and a file is
re-parsed when one gives another answer.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from engine.errors import FieldError, Problem, TaskError
from engine.files.spec import (
    JOB_ID_PATTERN,
    OPTION_FIELDS,
    TRIGGER_FIELDS,
    Essence,
    JobSpec,
    kept,
)
from engine.files.tasks import changed_since_import, resolve_task, signature_problem, split_task
from engine.files.yamlio import Located, one_line, parse_yaml

__all__ = ["Declared", "FileResult", "Loader", "Snapshot", "display_path", "find_files"]

_TOP_FIELDS = ("version", "defaults", "jobs")
_JOB_FIELDS = tuple(JobSpec.model_fields)
_DURATION_FIELDS = ("interval", "timeout", "retry_delay", "misfire_grace", "jitter")
_ID_RE = __import__("re").compile(JOB_ID_PATTERN)
log = logging.getLogger("schedctl")


@dataclass(frozen=True, slots=True)
class Declared:
    """A job as a file declares it, and where."""

    id: str
    spec: JobSpec
    file: str
    line: int
    column: int
    fingerprint: str

    @property
    def essence(self) -> Essence:
        return Essence(self.spec)


@dataclass(frozen=True)
class FileResult:
    path: str
    digest: str
    jobs: Mapping[str, Declared] = field(default_factory=dict)
    problems: tuple[Problem, ...] = ()

    @property
    def valid(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class Snapshot:
    """Everything the schedule files say at one moment."""

    files: Mapping[str, FileResult]
    duplicates: Mapping[str, tuple[Declared, ...]]
    missing: tuple[str, ...] = ()  # roots that do not exist: nothing can be said of them

    @property
    def jobs(self) -> dict[str, Declared]:
        """Jobs of valid files whose id is declared exactly once."""
        return {
            job_id: job
            for result in self.files.values()
            if result.valid
            for job_id, job in result.jobs.items()
            if job_id not in self.duplicates
        }

    @property
    def problems(self) -> list[Problem]:
        found = [p for result in self.files.values() for p in result.problems]
        for job_id, places in self.duplicates.items():
            first = places[0]
            for other in places[1:]:
                found.append(
                    Problem(
                        other.file,
                        other.line,
                        other.column,
                        f"job id {job_id!r} is also declared at {first.file}:{first.line}:"
                        f"{first.column}; job ids must be unique across files, rename one",
                    )
                )
        return sorted(found)

    @property
    def invalid_files(self) -> set[str]:
        return {path for path, result in self.files.items() if not result.valid}


def find_files(root: Path) -> list[Path]:
    """Schedule files under ``root`` (or ``root`` itself), sorted, following symlinks."""
    if root.is_file():
        return [root]
    found: list[Path] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink loop
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not _hidden(d))
        for name in sorted(filenames):
            if not _hidden(name) and name.endswith((".yaml", ".yml")):
                found.append(Path(dirpath) / name)
    return found


def display_path(path: Path) -> str:
    """One name per file however the folder was given: relative to the current directory
    when inside it, else absolute. Symlinks are kept: a ConfigMap's file is its link."""
    absolute = os.path.abspath(path)
    relative = os.path.relpath(absolute)
    return absolute if relative.startswith("..") else relative


def _hidden(name: str) -> bool:
    return name.startswith(".") or name.endswith("~")


class Loader:
    """Parses schedule files with the project's settings; keeps a cache by content hash."""

    def __init__(
        self,
        task_modules: Sequence[str] = ("tasks",),
        timezone: str = "UTC",
        check_tasks: bool = True,
        job_check: Callable[[JobSpec], tuple[str, str] | None] | None = None,
        schedule_check: Callable[[JobSpec], tuple[str, str] | None] | None = None,
    ) -> None:
        self.task_modules = tuple(task_modules)
        self.timezone = timezone
        self.check_tasks = check_tasks
        # A check of the running setup (e.g. that a celery job's task is a task of the
        # Celery app): (field, message) of a problem, asked once per task and executor.
        self.job_check = job_check
        # Whether the scheduler can compute the job's fire times, as (field, message) of a
        # problem: the engine's own triggers, given from above (files import no scheduler).
        self.schedule_check = schedule_check
        self._jobs: dict[tuple[str, str], tuple[str, str] | None] = {}
        self._cache: dict[str, FileResult] = {}
        self.parsed = 0  # files parsed, not served from cache: for tests and benchmarks
        # Task checks, once per (task, executor) per scan: (problem, the resolved object).
        self._tasks: dict[tuple[str, str], tuple[str | None, Any]] = {}
        # The task checks each cached file's result rests on, re-asked on every scan.
        self._checked: dict[str, dict[tuple[str, str, str], Any]] = {}
        self._used: dict[tuple[str, str, str], Any] | None = None  # while parsing a file
        self._warned: set[tuple[str, int]] = set()

    def task_problem(self, task: str, executor: str = "local") -> str | None:
        """What is wrong with a task path, or None; resolved once per path per scan."""
        return self._task(task, executor)[0]

    def call_problem(self, spec: JobSpec) -> tuple[str, str | None, str] | None:
        """(field, kwarg or None, message) when the task cannot take the job's args and
        kwargs, bound as a call would bind them; None when it can (or cannot be told)."""
        _, target = self._task(spec.task, _executor(spec))
        if target is None:
            return None
        return signature_problem(spec.task, target, spec.args, spec.kwargs)

    def job_problem(self, spec: JobSpec) -> tuple[str, str] | None:
        """What the setup check finds wrong with a job, or None; once per scan and kind."""
        if self.job_check is None:
            return None
        key = (spec.task, _executor(spec))
        if key not in self._jobs:
            self._jobs[key] = self.job_check(spec)
        if self._used is not None:
            self._used[("setup", *key)] = (self._jobs[key], spec)
        return self._jobs[key]

    def _task(self, task: str, executor: str) -> tuple[str | None, Any]:
        key = (task, executor)
        found = self._tasks.get(key)
        if found is None:
            try:
                target = resolve_task(task, self.task_modules, celery=executor == "celery")
                found = (None, target)
                self._warn_if_changed(split_task(task)[0])
            except TaskError as exc:
                found = (str(exc), None)
            self._tasks[key] = found
        if self._used is not None:
            self._used[("task", *key)] = found
        return found

    def _warn_if_changed(self, module: str) -> None:
        """The old code still resolves, but a restart would run other code: say so once."""
        file = changed_since_import(module)
        if file is None:
            return
        try:
            mark = (file, os.stat(file).st_mtime_ns)
        except OSError:
            return
        if mark not in self._warned:
            self._warned.add(mark)
            log.warning(
                "%s changed on disk since the engine imported it; the engine still runs "
                "the code it imported: restart the engine to load the new code.",
                display_path(Path(file)),
            )

    def _checks_hold(self, path: str) -> bool:
        """The task checks a cached file's result rests on give the same answers now (a
        task module may have appeared, or a function changed): every scan asks again."""
        for (kind, task, executor), before in self._checked.get(path, {}).items():
            if kind == "task":
                now = self._task(task, executor)
                if now[0] != before[0] or now[1] is not before[1]:
                    return False
            elif self.job_problem(before[1]) != before[0]:
                return False
        return True

    def scan(self, roots: Iterable[Path]) -> Snapshot:
        self._tasks.clear()  # a module that failed may import now
        self._jobs.clear()
        files: dict[str, FileResult] = {}
        missing: list[str] = []
        for root in roots:
            if not root.exists():
                name = display_path(root)
                problem = Problem(name, 1, 1, "no such file or folder")
                files[name] = FileResult(name, "", problems=(problem,))
                missing.append(name)
                continue
            for path in find_files(root):
                display = display_path(path)
                try:
                    data = path.read_bytes()
                except OSError as exc:
                    problem = Problem(display, 1, 1, f"cannot read file: {exc.strerror}")
                    files[display] = FileResult(display, "", problems=(problem,))
                    continue
                files[display] = self.load_bytes(display, data)
        live = set(files)
        for stale in set(self._cache) - live:
            del self._cache[stale]
            self._checked.pop(stale, None)
        return Snapshot(files, _duplicates(files.values()), tuple(missing))

    def load_bytes(self, path: str, data: bytes) -> FileResult:
        digest = hashlib.sha256(data).hexdigest()
        cached = self._cache.get(path)
        if cached is not None and cached.digest == digest and self._checks_hold(path):
            return cached
        self.parsed += 1
        self._used = {}
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            problem = Problem(path, 1, 1, f"not UTF-8 text ({exc.reason} at byte {exc.start})")
            result = FileResult(path, digest, problems=(problem,))
        else:
            try:
                result = self._load_text(path, text, digest)
            except Exception as exc:  # the last resort: this file fails, never the scan
                problem = Problem(
                    path,
                    1,
                    1,
                    f"schedctl could not read this file ({type(exc).__name__}: {exc}); "
                    "this is a bug in schedctl, please report it with the file",
                )
                result = FileResult(path, digest, problems=(one_line(problem),))
        finally:
            self._checked[path], self._used = self._used, None
        self._cache[path] = result
        return result

    def _load_text(self, path: str, text: str, digest: str) -> FileResult:
        doc = parse_yaml(text, path)
        jobs: dict[str, Declared] = {}
        if doc.data is not None:
            jobs = _FileChecker(self, doc).check()
        problems = tuple(sorted(one_line(p) for p in doc.problems))
        return FileResult(path, digest, {} if problems else jobs, problems)


class _FileChecker:
    def __init__(self, loader: Loader, doc: Located) -> None:
        self.loader = loader
        self.doc = doc

    def check(self) -> dict[str, Declared]:
        data = self.doc.data
        if not isinstance(data, dict):
            self.doc.problem(
                (), "a schedule file is a mapping with 'jobs:' (and optional 'defaults:')"
            )
            return {}
        for key in data:
            if key not in _TOP_FIELDS and not str(key).startswith("x-"):  # x-: anchors
                self.doc.problem((key,), _unknown(key, _TOP_FIELDS, "top-level key"), key=True)
        if data.get("version", 1) != 1:
            self.doc.problem(("version",), "unsupported schema version; write version: 1")
        defaults = self._defaults(data.get("defaults"))
        raw_jobs = data.get("jobs")
        if raw_jobs is None:
            return {}
        if not isinstance(raw_jobs, dict):
            self.doc.problem(
                ("jobs",),
                "jobs is a mapping of job id to job, not a list; write 'jobs:' then "
                "'  my-job:' then '    task: tasks.module:function'",
            )
            return {}
        jobs = {}
        for job_id, body in raw_jobs.items():
            declared = self._job(str(job_id), body, defaults)
            if declared is not None:
                jobs[declared.id] = declared
        return jobs

    def _defaults(self, raw: Any) -> dict[str, Any]:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.doc.problem(
                ("defaults",), "defaults is a mapping of job fields, e.g. timezone: UTC"
            )
            return {}
        kept = {}
        for key, value in raw.items():
            if key in OPTION_FIELDS:
                kept[key] = value
            elif key in _JOB_FIELDS:
                self.doc.problem(
                    ("defaults", key),
                    f"defaults cannot set {key!r}; write it in each job",
                    key=True,
                )
            else:
                self.doc.problem(("defaults", key), _unknown(key, OPTION_FIELDS, "field"), key=True)
        return kept

    def _job(self, job_id: str, body: Any, defaults: dict[str, Any]) -> Declared | None:
        base = ("jobs", job_id)
        if not _ID_RE.match(job_id):
            self.doc.problem(
                base,
                f"invalid job id {job_id!r}; use letters, digits, '.', '_' and '-', "
                "starting with a letter or digit, at most 128 characters",
                key=True,
            )
            return None
        if base in self.doc.refused:
            return None
        if not isinstance(body, dict):
            self.doc.problem(base, f"job {job_id!r} must be a mapping with at least 'task:'")
            return None
        merged = {**defaults, **body}
        merged.setdefault("timezone", self.loader.timezone)
        before = len(self.doc.problems)
        for name in _DURATION_FIELDS:
            where = self._origin(job_id, body, name)
            raw = self.doc.sexagesimal.get(where)
            if raw is not None:
                self.doc.problem(
                    where,
                    f"{name}: {raw} is read by YAML 1.1 as the number "
                    f"{merged.get(name)} (base 60); write a duration such as "
                    f"'{raw.replace(':', 'm', 1)}s' or '{raw.replace(':', 'h', 1)}m'",
                )
        try:
            spec = JobSpec.model_validate(merged)
        except ValidationError as exc:
            for error in exc.errors():
                self._report(job_id, body, error)
            return None
        if len(self.doc.problems) > before:
            return None
        if self.loader.check_tasks and not self._tasks_fit(job_id, body, spec):
            return None
        if self.loader.schedule_check is not None:
            schedule_error = self.loader.schedule_check(spec)
            if schedule_error is not None:
                name, message = schedule_error
                self.doc.problem(self._origin(job_id, body, name), message)
                return None
        line, column = self.doc.where(base, key=True)
        return Declared(job_id, kept(spec), self.doc.file, line, column, spec.fingerprint())

    def _refused_in(self, job_id: str) -> bool:
        """Whether a value of this job (or of the defaults) could not be built."""
        return any(
            path[:2] == ("jobs", job_id) or path[:1] == ("defaults",) for path in self.doc.refused
        )

    def _tasks_fit(self, job_id: str, body: dict[str, Any], spec: JobSpec) -> bool:
        """The task resolves, takes the job's arguments, and fits the setup; else the
        problem is reported where it was written."""
        loader = self.loader
        task_error = loader.task_problem(spec.task, _executor(spec))
        if task_error is not None:
            self.doc.problem(("jobs", job_id, "task"), task_error)
            return False
        call_error = loader.call_problem(spec)
        if call_error is not None:
            name, kwarg, message = call_error
            where = self._origin(job_id, body, name)
            written = where in self.doc.keys  # else neither the job nor the defaults did
            if kwarg is not None and (*where, kwarg) in self.doc.keys:
                where = (*where, kwarg)
            self.doc.problem(where if written else ("jobs", job_id, "task"), message, key=written)
            return False
        setup_error = loader.job_problem(spec)
        if setup_error is not None:
            name, message = setup_error
            self.doc.problem(self._origin(job_id, body, name), message)
            return False
        return True

    def _origin(self, job_id: str, body: dict[str, Any], name: str) -> tuple[str, ...]:
        return ("jobs", job_id, name) if name in body else ("defaults", name)

    def _report(self, job_id: str, body: dict[str, Any], error: Any) -> None:
        loc = tuple(error["loc"])
        kind = error["type"]
        base = ("jobs", job_id)
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, FieldError):
            if self._refused_in(job_id):
                return  # a value YAML could not build is missing: that is the problem
            where = self._origin(job_id, body, cause.field) if cause.field else base
            self.doc.problem(where, str(cause), key=cause.field in (None, *TRIGGER_FIELDS))
            return
        if not loc:
            if not self._refused_in(job_id):
                self.doc.problem(base, _message(error), key=True)
            return
        name = str(loc[0])
        path = (*self._origin(job_id, body, name), *loc[1:])
        if any(path[:end] in self.doc.refused for end in range(len(path) + 1)):
            return  # the forbidden tag there is reported already
        if kind == "extra_forbidden":
            self.doc.problem(path, _unknown(name, _JOB_FIELDS, "field"), key=True)
        elif kind == "missing":
            self.doc.problem(
                base,
                f"job {job_id!r} is missing required field {name!r}; "
                "write e.g. task: tasks.module:function",
                key=True,
            )
        elif kind == "value_error":
            self.doc.problem(path, _message(error))
        else:
            self.doc.problem(path, f"invalid {'.'.join(map(str, loc))}: {_message(error)}")


def _executor(spec: JobSpec) -> str:
    return str(getattr(spec, "executor", "local") or "local")


def _message(error: Any) -> str:
    cause = (error.get("ctx") or {}).get("error")
    if error["type"] == "value_error" and cause is not None:
        return str(cause)
    text = str(error["msg"])
    text = text[0].lower() + text[1:]
    if error["type"] in ("datetime_type", "datetime_parsing", "datetime_from_date_parsing"):
        text += "; write an ISO 8601 date and time such as 2027-01-01T09:00:00"
    elif error["type"] in ("bool_type", "bool_parsing"):
        text += f" (got {error.get('input')!r}); write true or false"
    elif "input" in error and not isinstance(error["input"], dict | list):
        text += f" (got {error['input']!r})"
    return text


def _unknown(name: str, known: Sequence[str], what: str) -> str:
    close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.6)
    if close:
        return f"unknown {what} {name!r}; did you mean {close[0]!r}?"
    return f"unknown {what} {name!r}; known: {', '.join(known)}"


def _duplicates(results: Iterable[FileResult]) -> dict[str, tuple[Declared, ...]]:
    places: dict[str, list[Declared]] = {}
    for result in results:
        for job_id, job in result.jobs.items():
            places.setdefault(job_id, []).append(job)
    return {job_id: tuple(found) for job_id, found in places.items() if len(found) > 1}
