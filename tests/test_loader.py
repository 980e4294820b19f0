"""How ``Loader.scan`` finds schedule files, merges defaults, and caches parsed files."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import time_machine

from engine.files.loader import Loader, find_files
from engine.settings import Settings
from tests.conftest import MakePackage
from tests.harness import Running, engine_settings, eventually, parse_time, running


@pytest.fixture(autouse=True)
def tasks_package(make_package: MakePackage) -> Path:
    return make_package("tasks", {"jobs": "def nightly():\n    pass\n\n\ndef ping():\n    pass\n"})


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def schedule(*job_ids: str, cron: str = "0 2 * * *") -> str:
    """A schedule file declaring ``job_ids``, each a cron job of ``tasks.jobs:nightly``."""
    body = "".join(
        f'  {job_id}:\n    task: tasks.jobs:nightly\n    cron: "{cron}"\n' for job_id in job_ids
    )
    return "jobs:\n" + body


def found(root: Path) -> list[str]:
    return sorted(path.relative_to(root).as_posix() for path in find_files(root))


# -- discovery ----------------------------------------------------------------------------


def test_yaml_and_yml_files_are_found_recursively_and_nothing_else(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", schedule("a"))
    write(tmp_path / "team" / "b.yml", schedule("b"))
    write(tmp_path / "team" / "deep" / "er" / "c.yaml", schedule("c"))
    write(tmp_path / "README.md", "# not a schedule\n")
    write(tmp_path / "team" / "d.json", "{}\n")

    assert found(tmp_path) == ["a.yaml", "team/b.yml", "team/deep/er/c.yaml"]
    assert sorted(Loader().scan([tmp_path]).jobs) == ["a", "b", "c"]


def test_a_symlinked_folder_is_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    write(elsewhere / "shared.yaml", schedule("shared"))
    root = tmp_path / "schedules"
    write(root / "own.yaml", schedule("own"))
    (root / "linked").symlink_to(elsewhere, target_is_directory=True)

    assert found(root) == ["linked/shared.yaml", "own.yaml"]
    assert sorted(Loader().scan([root]).jobs) == ["own", "shared"]


def test_a_symlink_loop_is_walked_once(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", schedule("a"))
    (tmp_path / "loop").symlink_to(tmp_path, target_is_directory=True)

    assert found(tmp_path) == ["a.yaml"]


def test_kubernetes_configmap_mount_is_read_once_through_its_visible_names(
    tmp_path: Path,
) -> None:
    # What a mounted ConfigMap looks like: the data in a timestamped hidden folder,
    # `..data` pointing at it, and the visible names pointing through `..data`.
    write(tmp_path / "..2027_01_01_00_00_00.123" / "reports.yaml", schedule("report"))
    (tmp_path / "..data").symlink_to("..2027_01_01_00_00_00.123", target_is_directory=True)
    (tmp_path / "reports.yaml").symlink_to("..data/reports.yaml")

    assert found(tmp_path) == ["reports.yaml"]
    assert list(Loader().scan([tmp_path]).jobs) == ["report"]


@pytest.mark.parametrize(
    "name",
    [
        ".hidden.yaml",
        ".reports.yaml.swp",
        "reports.yaml~",
        ".git/config.yaml",
        "..data/reports.yaml",
    ],
)
def test_hidden_and_backup_names_are_skipped(tmp_path: Path, name: str) -> None:
    write(tmp_path / "real.yaml", schedule("real"))
    write(tmp_path / name, "this: [is not: valid\n")

    assert found(tmp_path) == ["real.yaml"]
    snapshot = Loader().scan([tmp_path])
    assert snapshot.problems == []
    assert list(snapshot.jobs) == ["real"]


def test_a_file_given_directly_is_read(tmp_path: Path) -> None:
    path = write(tmp_path / "one.yaml", schedule("one"))

    assert list(Loader().scan([path]).jobs) == ["one"]


def test_a_missing_root_is_a_problem(tmp_path: Path) -> None:
    missing = tmp_path / "nope"

    assert [str(p) for p in Loader().scan([missing]).problems] == [
        f"{missing}:1:1: error: no such file or folder"
    ]


# -- empty files, defaults, datetimes -------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["", "\n\n", "# nothing scheduled yet\n# jobs:\n", "---\n", "jobs:\n", "jobs: {}\n"],
    ids=["empty", "blank-lines", "comments-only", "document-marker", "jobs-null", "jobs-empty"],
)
def test_a_file_without_jobs_is_valid_and_declares_none(tmp_path: Path, text: str) -> None:
    write(tmp_path / "empty.yaml", text)

    snapshot = Loader().scan([tmp_path])

    assert snapshot.problems == []
    assert snapshot.jobs == {}
    assert snapshot.files[str(tmp_path / "empty.yaml")].valid


def test_defaults_apply_under_each_job_and_the_jobs_own_values_win(tmp_path: Path) -> None:
    write(
        tmp_path / "s.yaml",
        """
        defaults:
          timezone: Europe/Berlin
          timeout: 10m
          retries: 2
          labels: {team: ops}
        jobs:
          inherits:
            task: tasks.jobs:nightly
            cron: "0 2 * * *"
          overrides:
            task: tasks.jobs:ping
            interval: 30s
            timezone: America/New_York
            retries: 0
            labels: {team: web}
        """,
    )

    jobs = Loader().scan([tmp_path]).jobs
    inherits, overrides = jobs["inherits"].spec, jobs["overrides"].spec

    assert (inherits.timezone, inherits.timeout, inherits.retries, inherits.labels) == (
        "Europe/Berlin",
        timedelta(minutes=10),
        2,
        {"team": "ops"},
    )
    assert (overrides.timezone, overrides.timeout, overrides.retries, overrides.labels) == (
        "America/New_York",
        timedelta(minutes=10),
        0,
        {"team": "web"},
    )


def test_timezone_setting_applies_when_the_file_names_none(tmp_path: Path) -> None:
    write(tmp_path / "s.yaml", schedule("report"))

    job = Loader(timezone="Asia/Tokyo").scan([tmp_path]).jobs["report"]

    assert job.spec.timezone == "Asia/Tokyo"


def test_naive_at_stays_naive_and_an_offset_is_kept(tmp_path: Path) -> None:
    write(
        tmp_path / "s.yaml",
        """
        defaults:
          timezone: Europe/Berlin
        jobs:
          launch:
            task: tasks.jobs:nightly
            at: 2027-01-01T09:00:00
          launch-utc:
            task: tasks.jobs:nightly
            at: 2027-01-01T09:00:00+00:00
        """,
    )

    jobs = Loader().scan([tmp_path]).jobs

    assert jobs["launch"].spec.at == datetime(2027, 1, 1, 9, 0)
    assert jobs["launch"].spec.at.tzinfo is None
    assert jobs["launch"].spec.timezone == "Europe/Berlin"
    assert jobs["launch-utc"].spec.at == datetime(2027, 1, 1, 9, 0, tzinfo=UTC)


def test_declared_job_knows_its_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "s.yaml", "# header\n" + schedule("report"))

    job = Loader().scan([tmp_path]).jobs["report"]

    assert (job.file, job.line, job.column) == (str(path), 3, 3)


# -- cache and invalid files ----------------------------------------------------------------


def test_rescan_reparses_only_the_file_that_changed(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        write(tmp_path / f"{name}.yaml", schedule(name))
    loader = Loader()
    loader.scan([tmp_path])
    assert loader.parsed == 3

    loader.scan([tmp_path])
    assert loader.parsed == 3

    write(tmp_path / "b.yaml", schedule("b", cron="0 3 * * *"))
    snapshot = loader.scan([tmp_path])

    assert loader.parsed == 4
    assert snapshot.jobs["b"].spec.cron == "0 3 * * *"


def test_touching_a_file_without_changing_it_parses_nothing(tmp_path: Path) -> None:
    path = write(tmp_path / "a.yaml", schedule("a"))
    loader = Loader()
    loader.scan([tmp_path])
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))

    loader.scan([tmp_path])

    assert loader.parsed == 1


def test_a_file_that_turns_invalid_keeps_no_jobs_and_other_files_still_apply(
    tmp_path: Path,
) -> None:
    good = write(tmp_path / "good.yaml", schedule("good"))
    flaky = write(tmp_path / "flaky.yaml", schedule("flaky", "flaky-too"))
    loader = Loader()
    assert sorted(loader.scan([tmp_path]).jobs) == ["flaky", "flaky-too", "good"]

    flaky.write_text(flaky.read_text().replace('cron: "0 2 * * *"', 'cron: "0 2 * *"', 1))
    snapshot = loader.scan([tmp_path])

    assert snapshot.files[str(flaky)].jobs == {}
    assert not snapshot.files[str(flaky)].valid
    assert snapshot.files[str(good)].valid
    assert list(snapshot.jobs) == ["good"]
    assert snapshot.invalid_files == {str(flaky)}
    assert [(p.file, p.line) for p in snapshot.problems] == [(str(flaky), 4)]


def test_a_removed_file_drops_its_jobs(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", schedule("a"))
    gone = write(tmp_path / "b.yaml", schedule("b"))
    loader = Loader()
    loader.scan([tmp_path])

    gone.unlink()

    assert list(loader.scan([tmp_path]).jobs) == ["a"]


# -- the engine with files it cannot use (issue 6, items 1, 5 and 6) ----------------------

ENGINE_TASKS = "ld_tasks"


def _bad_files() -> dict[str, str]:
    """One file per way a value used to escape the loader or the scheduler."""
    head = f"jobs:\n  {{name}}:\n    task: {ENGINE_TASKS}.jobs:ping\n"
    values = {
        "feb30": "    at: 2027-02-30T09:00:00\n",
        "month13": "    interval: 5m\n    start: 2027-13-01T00:00:00\n",
        "inttag": "    interval: !!int abc\n",
        "booltag": "    interval: 5m\n    paused: !!bool maybe\n",
        "stamptag": "    at: !!timestamp abc\n",
        "digits": "    interval: " + "9" * 5000 + "\n",
        "surrogate": '    interval: 5m\n    description: "\\ud800"\n',
        "nested": "    interval: 5m\n    args: " + "[" * 300 + "]" * 300 + "\n",
        "offset": "    at: 9999-12-31T23:59:59-05:00\n",
        "pagopago": "    at: 9999-12-31T23:59:59\n    timezone: Pacific/Pago_Pago\n",
        "tiny": "    interval: 0.000001\n",
        "bell": '    interval: 5m\n    description: "\x07"\n',
    }
    return {name: head.format(name=name) + value for name, value in values.items()}


@pytest.fixture
def engine_setup(tmp_path: Path, make_package: MakePackage) -> Settings:
    make_package(ENGINE_TASKS, {"jobs": "async def ping():\n    return 'ok'\n"})
    return engine_settings(tmp_path, ENGINE_TASKS, shutdown_grace=0.5)


async def test_the_engine_starts_over_files_it_cannot_use_and_applies_the_others(
    engine_setup: Settings,
) -> None:
    schedules = engine_setup.schedules_dir
    for name, text in _bad_files().items():
        (schedules / f"{name}.yaml").write_text(text)
    good = schedules / "good.yaml"
    good.write_text(f"jobs:\n  good:\n    task: {ENGINE_TASKS}.jobs:ping\n    interval: 1h\n")

    async with running(engine_setup) as engine:
        assert [job["id"] for job in (await engine.get("/jobs"))["jobs"]] == ["good"]
        errors = (await engine.get("/status"))["last_reconcile"]["errors"]
        assert sorted({Path(e["file"]).stem for e in errors}) == sorted(_bad_files())
        assert all(e["line"] > 1 for e in errors), errors  # each at its value, not at 1:1

        # A running engine goes on applying every other file's edits.
        good.write_text(f"jobs:\n  good:\n    task: {ENGINE_TASKS}.jobs:ping\n    interval: 2h\n")
        (schedules / "new.yaml").write_text(
            f"jobs:\n  new:\n    task: {ENGINE_TASKS}.jobs:ping\n    interval: 1h\n"
        )
        report = await engine.reconcile()
        assert (report["added"], report["updated"]) == (1, 1), report
        job = await engine.job("good")
        assert job["trigger"]["expression"] == "2h"


async def test_a_server_with_the_smallest_interval_and_a_huge_catch_up_keeps_answering(
    engine_setup: Settings,
) -> None:
    # Ten jobs at the smallest interval a file may declare, with jitter, never coalesced,
    # and a grace of a century: after two days down, 172,800 missed fire times each.
    body = "".join(
        f"  tick-{n}:\n    task: {ENGINE_TASKS}.jobs:ping\n    interval: 1s\n"
        "    jitter: 1s\n    coalesce: false\n    misfire_grace: 5200w\n"
        for n in range(10)
    )
    (engine_setup.schedules_dir / "ticks.yaml").write_text("jobs:\n" + body)
    async with running(engine_setup) as engine:
        first = parse_time((await engine.job("tick-0"))["next_run_time"])

    with time_machine.travel(first + timedelta(days=2), tick=True):
        async with running(engine_setup) as engine:
            # The catch-up is bounded (2,000 fire times a job, then the latest due): the
            # loop answers within the catch-up and, once it is done, nothing is stalled.
            await eventually(
                lambda: _healthy(engine), within=10, what="/healthz ok after the catch-up"
            )
            slowest = 0.0
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                asked = time.monotonic()
                response = await engine.client.get("/healthz")
                slowest = max(slowest, time.monotonic() - asked)
                assert response.status_code == 200, response.text
                await asyncio.sleep(0.1)
            assert slowest < 0.5, f"/healthz took {slowest:.2f}s"
            job = await engine.job("tick-0")
            assert parse_time(job["next_run_time"]) > datetime.now(UTC) - timedelta(seconds=5)


async def _healthy(engine: Running) -> bool:
    response = await engine.client.get("/healthz")
    return response.status_code == 200


def test_validate_reports_every_files_problems_when_one_holds_a_value_yaml_cannot_build(
    tmp_path: Path,
) -> None:
    # `schedctl validate` used to print a bare "error: day is out of range for month" and
    # hide every other file's problems.
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "__init__.py").touch()
    (tmp_path / "tasks" / "launch.py").write_text("def go():\n    pass\n")
    write(
        tmp_path / "s" / "a.yaml",
        "jobs:\n  a:\n    task: tasks.launch:go\n    at: 2027-02-30T09:00:00\n",
    )
    write(tmp_path / "s" / "b.yaml", "jobs:\n  b:\n    task: tasks.launch:go\n    crn: x\n")
    write(tmp_path / "s" / "c.yaml", "jobs:\n  c:\n    task: tasks.launch:go\n    interval: 1s\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_")}
    env.pop("PYTHONPATH", None)

    done = subprocess.run(
        [sys.executable, "-m", "engine", "validate", "s"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        "s/a.yaml:4:9: error: '2027-02-30T09:00:00' is not a valid date or time (day is out "
        "of range for month); write an ISO 8601 date and time such as 2027-01-01T09:00:00",
        "s/b.yaml:4:5: error: unknown field 'crn'; did you mean 'cron'?",
    ]
    assert done.stderr == "FAILED: 2 problem(s) in 2 of 3 file(s)\n"


def test_jobs_with_the_same_fields_share_their_empty_parts_yet_stay_apart() -> None:
    """A spec is kept per job (100,000 of them): what equal specs hold alike is held once,
    and no job's args, kwargs, labels or given fields show in another's."""
    from engine.files.spec import JobSpec

    first = JobSpec.model_validate({"task": "pkg.jobs:noop", "interval": "1s"})
    second = JobSpec.model_validate({"task": "pkg.jobs:other", "cron": "0 2 * * *"})
    third = JobSpec.model_validate({"task": "".join(["pkg.jobs:", "noop"]), "interval": "1s"})
    given = JobSpec.model_validate(
        {"task": "pkg.jobs:noop", "interval": "1s", "args": [1], "labels": {"team": "a"}}
    )
    assert first.args is second.args and first.kwargs is second.kwargs  # shared empties
    assert first.model_fields_set is third.model_fields_set
    assert first.task is third.task  # one text for a task many jobs run
    assert first.model_fields_set == {"task", "interval"}
    assert second.model_fields_set == {"task", "cron"}
    assert given.model_fields_set == {"task", "interval", "args", "labels"}
    assert (given.args, given.labels, first.args, first.labels) == ([1], {"team": "a"}, [], {})
    assert first == third and first.canonical_json() == third.canonical_json()
    moved = first.model_copy(update={"start": datetime(2027, 1, 1), "args": [2]})
    assert (moved.args, first.args, third.args) == ([2], [], [])
    assert first.model_fields_set == {"task", "interval"} == third.model_fields_set


def test_a_kept_spec_is_the_spec_the_file_gave_in_a_fraction_of_the_memory(
    tmp_path: Path,
) -> None:
    """The loader keeps each job's spec as an equal copy whose fields share one key table
    with every other job's: at 100,000 jobs the dict pydantic builds per spec was the
    engine's largest allocation."""
    from engine.files.spec import JobSpec, kept

    data = {
        "task": "pkg.jobs:noop",
        "interval": "90s",
        "args": [1],
        "labels": {"team": "a"},
        "description": "nightly",
    }
    spec = JobSpec.model_validate(data)
    copy = kept(spec)
    assert copy == spec and spec == copy and copy is not spec
    assert copy.canonical_json() == spec.canonical_json()
    assert copy.fingerprint() == spec.fingerprint()
    assert copy.model_fields_set == spec.model_fields_set
    assert repr(copy) == repr(spec)
    with pytest.raises(ValueError, match="frozen"):
        copy.paused = True
    assert copy.model_copy(update={"paused": True}).paused and not copy.paused

    write(tmp_path / "a.yaml", schedule("a", "b"))
    loaded = Loader().scan([tmp_path]).jobs["a"].spec
    assert loaded == JobSpec.model_validate({"task": "tasks.jobs:nightly", "cron": "0 2 * * *"})

    # In a fresh interpreter that made many specs first (as an engine restoring its state
    # does), so the copies' saving cannot depend on which test ran before this one.
    script = textwrap.dedent(
        """
        import tracemalloc
        from engine.files.spec import JobSpec, kept

        data = {"task": "pkg.jobs:noop", "interval": "90s", "description": "nightly"}
        specs = [JobSpec.model_validate({**data, "description": f"job {n}"}) for n in range(2000)]
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        copies = [kept(spec) for spec in specs]
        grown = tracemalloc.get_traced_memory()[0] - before
        fresh = [JobSpec.model_validate(spec.essence()) for spec in specs]
        print(grown, tracemalloc.get_traced_memory()[0] - before - grown)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    grown, validated = map(int, done.stdout.split())
    assert grown < validated / 3, (grown, validated)
