"""Task paths: what a schedule file (or a saved runtime job) may name, the arguments the
task can take, and task code that appears or changes while the engine runs.

A schedule file is input we do not trust: it must not be able to reach anything but a
plain public function of an allowed module (no dunder or private names, no modules,
classes or builtins through attributes), checked on every reconcile.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

from engine.errors import TaskError
from engine.files.loader import Loader
from engine.files.tasks import resolve_runtime, resolve_task
from engine.settings import Settings
from tests.conftest import MakePackage
from tests.harness import engine_settings, eventually, running

PKG = "sec_tasks"

JOBS = """
import functools
import os
import shutil
from os import system
from shutil import rmtree
from subprocess import run

from sec_lib.helpers import cleanup

marks = []


def nightly(kind, *, recipients=None, password=None):
    marks.append(kind)


async def ping():
    return None


def anything(*args, **kwargs):
    return None


def only_positional(kind, /):
    return kind


class Report:
    def method(self):
        return None


partial_job = functools.partial(nightly, "pdf")
bound = Report().method
stdlib_module = os
_private = nightly
"""


@pytest.fixture
def jobs(make_package: MakePackage) -> ModuleType:
    make_package("sec_lib", {"helpers": "def cleanup():\n    return None\n"})
    make_package(PKG, {"jobs": JOBS})
    return importlib.import_module(f"{PKG}.jobs")


def errors(tmp_path: Path, text: str, loader: Loader | None = None) -> list[str]:
    """``line:col: message`` of every problem of one schedule file."""
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(text).lstrip())
    snapshot = (loader or Loader(task_modules=(PKG,))).scan([path])
    return [f"{p.line}:{p.column}: {p.message}" for p in snapshot.problems]


def job(task: str, extra: str = "") -> str:
    return f'jobs:\n  j:\n    task: "{task}"\n    cron: "0 2 * * *"\n{extra}'


# -- item 10: what a task path may name ------------------------------------------------------

ACCEPTED = [
    (f"{PKG}.jobs:nightly", "    args: [pdf]\n"),
    (f"{PKG}.jobs.nightly", "    args: [pdf]\n"),
    (f"{PKG}.jobs:ping", ""),  # async def
    (f"{PKG}.jobs:cleanup", ""),  # re-exported from the project's own library
]

REFUSED = [
    (f"{PKG}:__setattr__", "private and dunder names are refused"),
    (f"{PKG}.jobs:__dict__", "private and dunder names are refused"),
    (f"{PKG}.jobs:_private", "private and dunder names are refused"),
    (f"{PKG}.__init__:nightly", "private and dunder names are refused"),
    (f"{PKG}.jobs:system", "is a builtin function, not a function"),
    (f"{PKG}.jobs:rmtree", "shutil.rmtree, from the standard library"),
    (f"{PKG}.jobs:run", "subprocess.run, from the standard library"),
    (f"{PKG}.jobs:Report", "is a class, not a function"),
    (f"{PKG}.jobs:stdlib_module", "is a module, not a function"),
    (f"{PKG}.jobs:partial_job", "is a partial, not a function"),
    (f"{PKG}.jobs:bound", "is a method, not a function"),
    (f"{PKG}.jobs:Report.method", "is not a dotted path"),
    (f"{PKG}.jobs:os.system", "is not a dotted path"),
    (f"{PKG}.os:system", f"task module '{PKG}.os' not found"),
    ("os:system", "task module 'os' is outside the allowed prefixes"),
]


@pytest.mark.parametrize(("task", "args"), ACCEPTED)
def test_a_plain_public_function_of_an_allowed_module_is_a_task(
    jobs: ModuleType, tmp_path: Path, task: str, args: str
) -> None:
    assert errors(tmp_path, job(task, args)) == []


@pytest.mark.parametrize(("task", "reason"), REFUSED)
def test_anything_else_a_file_names_is_refused_at_its_task(
    jobs: ModuleType, tmp_path: Path, task: str, reason: str
) -> None:
    found = errors(tmp_path, job(task))
    assert len(found) == 1, found
    assert found[0].startswith("3:11: "), found
    assert reason in found[0], found
    with pytest.raises(TaskError):
        resolve_task(task, (PKG,))


def test_a_path_through_an_attribute_is_refused_by_the_resolver_too(jobs: ModuleType) -> None:
    for task in (f"{PKG}.jobs:Report.method", f"{PKG}.jobs:os.system"):
        with pytest.raises(TaskError, match="name one function defined at the top"):
            resolve_task(task, (PKG,))


def test_a_package_whose_search_path_was_changed_imports_nothing_from_elsewhere(
    jobs: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attack of issue 6: ``tasks:__setattr__`` with ``[__path__, [<stdlib dir>]]``
    turned ``tasks.os`` into a copy of ``os``. Were the path changed anyway, the copy is
    refused before any of its code runs."""
    package = sys.modules[PKG]
    monkeypatch.setattr(package, "__path__", [os.path.dirname(os.__file__)])
    for task in (f"{PKG}.os:system", f"{PKG}.os:popen", f"{PKG}.shutil:rmtree"):
        with pytest.raises(TaskError, match="not from its own package"):
            resolve_task(task, (PKG,))
    assert f"{PKG}.os" not in sys.modules and f"{PKG}.shutil" not in sys.modules


def test_a_module_planted_in_sys_modules_is_refused(
    jobs: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, f"{PKG}.evil", os)
    with pytest.raises(TaskError, match="is not the module"):
        resolve_task(f"{PKG}.evil:system", (PKG,))
    # A copy of shutil under a task module's name: its functions look like task code.
    spec = importlib.util.spec_from_file_location(f"{PKG}.copy", sys.modules["shutil"].__file__)
    assert spec is not None and spec.loader is not None
    planted = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(planted)
    monkeypatch.setitem(sys.modules, f"{PKG}.copy", planted)
    with pytest.raises(TaskError, match="not from its own package"):
        resolve_task(f"{PKG}.copy:rmtree", (PKG,))


def test_a_runtime_reference_follows_the_same_rules_outside_the_standard_library(
    jobs: ModuleType,
) -> None:
    assert resolve_runtime(f"{PKG}.jobs:nightly") is jobs.nightly
    assert resolve_runtime("sec_lib.helpers:cleanup") is sys.modules["sec_lib.helpers"].cleanup
    for reference, reason in [
        ("os:system", "standard library"),
        ("builtins:eval", "standard library"),
        ("shutil:rmtree", "standard library"),
        (f"{PKG}.jobs:system", "builtin function"),
        (f"{PKG}.jobs:rmtree", "standard library"),
        (f"{PKG}.jobs:Report", "a class"),
        (f"{PKG}.jobs:_private", "private"),
        (f"{PKG}:__setattr__", "dunder"),
    ]:
        with pytest.raises(TaskError, match=reason):
            resolve_runtime(reference)


def test_a_celery_task_needs_executor_celery(make_package: MakePackage, tmp_path: Path) -> None:
    pytest.importorskip("celery")
    make_package(
        PKG,
        {
            "ctasks": (
                'from celery import Celery\n\napp = Celery("t", broker="memory://")\n\n\n'
                "@app.task(shared=False)\ndef report(kind):\n    return kind\n"
            )
        },
    )
    found = errors(tmp_path, job(f"{PKG}.ctasks:report", "    args: [pdf]\n"))
    assert found == [
        f"3:11: {PKG}.ctasks:report is a Celery task; use executor: celery, or name a plain "
        "function"
    ]
    assert resolve_task(f"{PKG}.ctasks:report", (PKG,), celery=True) is not None
    bad = errors(tmp_path, job(f"{PKG}.ctasks:report", "    executor: celery\n"))
    assert bad and "needs the argument 'kind'" in bad[0]


def test_a_cached_file_is_checked_again_on_every_scan(
    jobs: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loader = Loader(task_modules=(PKG,))
    text = job(f"{PKG}.jobs:nightly", "    args: [pdf]\n")
    assert errors(tmp_path, text, loader) == []
    monkeypatch.setattr(jobs, "nightly", os.system)  # same bytes, other object
    assert errors(tmp_path, text, loader) == [
        f"3:11: {PKG}.jobs:nightly is a builtin function, not a function; name a function "
        "defined with def or async def in a task module"
    ]
    assert loader.parsed == 2


async def test_a_schedule_file_cannot_run_a_shell_command(
    jobs: ModuleType, tmp_path: Path, make_package: MakePackage
) -> None:
    """The exploit end to end in a live engine: one file rewrites the package's search
    path, a later edit of another names ``os:system`` through it."""
    settings: Settings = engine_settings(tmp_path, PKG, shutdown_grace=0.5)
    marker = tmp_path / "pwned"
    stdlib = os.path.dirname(os.__file__)
    never = '"0 0 1 1 *"'
    (settings.schedules_dir / "a.yaml").write_text(
        f'jobs:\n  tamper:\n    task: "{PKG}:__setattr__"\n    cron: {never}\n'
        f'    args: ["__path__", ["{stdlib}"]]\n'
    )
    shell = (
        f'jobs:\n  shell:\n    task: "{PKG}.os:system"\n    cron: {never}\n'
        f'    args: ["touch {marker}"]\n'
    )
    (settings.schedules_dir / "b.yaml").write_text(shell)
    async with running(settings) as engine:
        if await engine.scheduler.run_job("tamper"):
            await eventually(engine.until_runs("tamper", lambda runs: bool(runs)))
        (settings.schedules_dir / "b.yaml").write_text(shell + "# edited\n")
        await engine.reconcile()
        if await engine.scheduler.run_job("shell"):
            await eventually(engine.until_runs("shell", lambda runs: bool(runs)))
        status = await engine.get("/status")
        jobs_listed = (await engine.get("/jobs"))["jobs"]
    assert not marker.exists()
    assert jobs_listed == []
    found = status["last_reconcile"]["errors"]
    messages = {e["file"].rsplit("/", 1)[-1]: e["message"] for e in found}
    assert "private and dunder names are refused" in messages["a.yaml"]
    assert f"task module '{PKG}.os' not found" in messages["b.yaml"]
    assert sys.modules[PKG].__path__ != [stdlib]


# -- item 8: arguments the task's signature cannot take ---------------------------------------

NIGHTLY = f"{PKG}.jobs:nightly(kind, *, recipients=…, password=…)"

SIGNATURES = [
    pytest.param(
        "",
        f"3:11: {NIGHTLY} needs the argument 'kind'; add it to args, or kind: ... to kwargs",
        id="missing-nothing-written",
    ),
    pytest.param(
        "    kwargs: {recipients: [ops@example.com]}\n",
        f"5:5: {NIGHTLY} needs the argument 'kind'; add it to args, or kind: ... to kwargs",
        id="missing-at-kwargs",
    ),
    pytest.param(
        "    args: [pdf, csv]\n",
        f"5:5: {NIGHTLY} takes 1 positional argument, not 2; pass at most 1 in args",
        id="too-many-positional",
    ),
    pytest.param(
        "    args: [pdf]\n    kwargs:\n      recipient: [ops@example.com]\n",
        f"7:7: {NIGHTLY} has no parameter 'recipient'; did you mean 'recipients'?",
        id="unknown-keyword-did-you-mean",
    ),
    pytest.param(
        "    args: [pdf]\n    kwargs: {kind: csv}\n",
        f"6:14: {NIGHTLY} gets 'kind' twice, by position in args and by name in kwargs; remove one",
        id="twice",
    ),
]


@pytest.mark.parametrize(("extra", "expected"), SIGNATURES)
def test_arguments_the_signature_cannot_take_are_an_error_where_they_are_written(
    jobs: ModuleType, tmp_path: Path, extra: str, expected: str
) -> None:
    assert errors(tmp_path, job(f"{PKG}.jobs:nightly", extra)) == [expected]


def test_arguments_from_defaults_are_located_in_the_defaults(
    jobs: ModuleType, tmp_path: Path
) -> None:
    text = "defaults:\n  args: [pdf, csv]\n" + job(f"{PKG}.jobs:nightly")
    assert errors(tmp_path, text) == [
        f"2:3: {NIGHTLY} takes 1 positional argument, not 2; pass at most 1 in args"
    ]


def test_a_positional_only_parameter_given_by_name_is_said_so(
    jobs: ModuleType, tmp_path: Path
) -> None:
    found = errors(tmp_path, job(f"{PKG}.jobs:only_positional", "    kwargs: {kind: pdf}\n"))
    assert found == [
        f"5:14: {PKG}.jobs:only_positional(kind, /) takes 'kind' only by position; move it to args"
    ]


def test_a_secret_value_is_never_echoed_in_a_signature_error(
    jobs: ModuleType, tmp_path: Path
) -> None:
    extra = '    args: [pdf]\n    kwargs: {passwrd: "hunter2-s3cret", api_token: "tok-s3cret"}\n'
    found = errors(tmp_path, job(f"{PKG}.jobs:nightly", extra))
    assert len(found) == 1 and "did you mean 'password'?" in found[0], found
    assert "s3cret" not in found[0]


def test_a_task_taking_anything_takes_anything(jobs: ModuleType, tmp_path: Path) -> None:
    extra = "    args: [1, 2, 3]\n    kwargs: {a: 1, password: x}\n"
    assert errors(tmp_path, job(f"{PKG}.jobs:anything", extra)) == []


# -- item 9: task code that appears or changes while the engine runs -------------------------


def test_a_task_module_created_later_is_found_on_the_next_scan(
    jobs: ModuleType, tmp_path: Path
) -> None:
    loader = Loader(task_modules=(PKG,))
    text = job(f"{PKG}.newmod:hello")
    assert errors(tmp_path, text, loader) == [
        f"3:11: task module '{PKG}.newmod' not found; check the path (tasks are imported "
        "from the current directory)"
    ]
    package = Path(jobs.__file__).parent
    (package / "newmod.py").write_text("def hello():\n    return 'hi'\n")
    assert errors(tmp_path, text, loader) == []  # the file's bytes did not change


def test_a_function_added_to_an_imported_module_says_a_restart_loads_it(
    jobs: ModuleType, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    loader = Loader(task_modules=(PKG,))
    assert errors(tmp_path, job(f"{PKG}.jobs:ping"), loader) == []
    source = Path(jobs.__file__)
    source.write_text(JOBS + "\n\ndef fresh():\n    return None\n")
    found = errors(tmp_path, job(f"{PKG}.jobs:fresh"), loader)
    assert len(found) == 1, found
    assert found[0].startswith(f"3:11: module '{PKG}.jobs' has no callable 'fresh'"), found
    assert found[0].endswith(
        "jobs.py changed on disk since the engine imported it; restart the engine to load "
        "the new code)"
    ), found
    # A task that still resolves from the old code: the log says so, once.
    with caplog.at_level(logging.WARNING, logger="schedctl"):
        for _ in range(3):
            assert errors(tmp_path, job(f"{PKG}.jobs:ping"), loader) == []
    warned = [r.getMessage() for r in caplog.records if "changed on disk" in r.getMessage()]
    assert len(warned) == 1, warned
    assert "restart the engine to load the new code" in warned[0]


async def test_a_live_engine_applies_a_job_once_its_task_module_exists(
    jobs: ModuleType, tmp_path: Path
) -> None:
    settings = engine_settings(tmp_path, PKG, shutdown_grace=0.5)
    (settings.schedules_dir / "late.yaml").write_text(job(f"{PKG}.late:hello"))
    async with running(settings) as engine:
        status = await engine.get("/status")
        assert [e["message"] for e in status["last_reconcile"]["errors"]] == [
            f"task module '{PKG}.late' not found; check the path (tasks are imported "
            "from the current directory)"
        ]
        (Path(jobs.__file__).parent / "late.py").write_text("def hello():\n    return None\n")
        await engine.reconcile()  # as a resync or SIGHUP does; the YAML did not change
        listed = (await engine.get("/jobs"))["jobs"]
        assert [(j["id"], j["task"]) for j in listed] == [("j", f"{PKG}.late:hello")]
        assert (await engine.get("/status"))["last_reconcile"]["errors"] == []
