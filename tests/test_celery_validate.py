"""``validate`` (and every reconcile) checks Celery jobs against the Celery app of the setup."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.surfaces.cli import main
from tests.conftest import MakePackage

pytest.importorskip("celery")

APP = """
from celery import Celery

app = Celery("vapp", broker="memory://")


@app.task(shared=False)
def report(kind):
    return kind


def plain(kind):
    return kind


not_an_app = object()
"""


@pytest.fixture
def project(make_package: MakePackage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    make_package("vtasks", {"app": APP})
    monkeypatch.setenv("ENGINE_TASK_MODULES", "vtasks")
    monkeypatch.delenv("ENGINE_CELERY_APP", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def validate(tmp_path: Path, body: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    path = tmp_path / "jobs.yaml"
    path.write_text(body)
    code = main(["validate", str(path)])
    return code, capsys.readouterr().out


JOB = """jobs:
  nightly:
    task: vtasks.app:{task}
    cron: "0 2 * * *"
    args: [pdf]
    executor: celery
"""


def test_a_celery_job_needs_the_celery_app_setting(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = validate(project, JOB.format(task="report"), capsys)
    assert code == 1
    assert out.startswith("jobs.yaml:6:15: error: executor: celery needs a Celery app: set ")
    assert "ENGINE_CELERY_APP=module:attribute" in out


def test_a_celery_task_of_the_app_is_valid(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENGINE_CELERY_APP", "vtasks.app:app")
    code, out = validate(project, JOB.format(task="report"), capsys)
    assert (code, out) == (0, "OK: 1 job in 1 file\n")


def test_a_plain_function_is_not_a_celery_task(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENGINE_CELERY_APP", "vtasks.app:app")
    code, out = validate(project, JOB.format(task="plain"), capsys)
    assert code == 1
    assert out.startswith(
        "jobs.yaml:3:11: error: vtasks.app:plain is not a task of the Celery app vtasks.app:app"
    )


def test_a_setting_that_names_no_celery_app_is_said_so(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENGINE_CELERY_APP", "vtasks.app:not_an_app")
    code, out = validate(project, JOB.format(task="report"), capsys)
    assert code == 1
    assert "ENGINE_CELERY_APP='vtasks.app:not_an_app' is a object, not a Celery app" in out


def test_a_queue_needs_the_celery_executor(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = 'jobs:\n  local:\n    task: vtasks.app:plain\n    cron: "0 2 * * *"\n'
    body += "    args: [pdf]\n    queue: reports\n"
    code, out = validate(project, body, capsys)
    assert code == 1
    assert out.startswith("jobs.yaml:6:12: error: queue only applies with executor: celery")


def test_local_jobs_never_import_celery_apps(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENGINE_CELERY_APP", "vtasks.missing:app")
    body = 'jobs:\n  local:\n    task: vtasks.app:plain\n    cron: "0 2 * * *"\n    args: [x]\n'
    assert validate(project, body, capsys) == (0, "OK: 1 job in 1 file\n")
