"""The ``schedctl`` command line: thin commands over the engine's pieces."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from engine._version import __version__
from engine.errors import SchedctlError, SettingsError
from engine.execution.celery_app import CeleryApp, celery_app_setting
from engine.files.cron import CronExpression
from engine.files.loader import Loader
from engine.files.preview import aware, next_fire_times
from engine.files.schema import file_schema
from engine.files.spec import JobSpec
from engine.files.tasks import ensure_cwd_on_path, resolve_task
from engine.scheduler.jobs import schedule_problem
from engine.settings import Settings, url_from_env

__all__ = ["main"]


class UsageError(SchedctlError):
    """Bad input on the command line; exit 1 with the message."""


_URL_HELP = "the running engine (default: ENGINE_URL, else http://127.0.0.1:8000)"
_SCHEDULES_HELP = "schedules folder (default: ENGINE_SCHEDULES_DIR, else schedules)"
_FILE_SETTINGS = "ENGINE_SCHEDULES_DIR, ENGINE_TASK_MODULES (tasks), ENGINE_TIMEZONE (UTC)"


def _command(
    sub: Any, name: str, summary: str, exits: str, settings: str = ""
) -> argparse.ArgumentParser:
    """A subcommand whose --help says what it does, its exit codes and its settings."""
    epilog = f"exit codes: {exits}"
    if settings:
        epilog += f"\nsettings: {settings}"
    return sub.add_parser(
        name,
        help=summary,
        description=summary,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="schedctl",
        description="Schedules as code: YAML job schedules reconciled into a live scheduler.",
        epilog="`schedctl COMMAND --help` says what a command does, its exit codes and its "
        "ENGINE_* settings. Flags win over the settings.",
    )
    parser.add_argument("--version", action="version", version=f"schedctl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = _command(
        sub,
        "serve",
        "run the engine (reconcile the files, fire jobs) and the status API",
        "0 stopped cleanly on SIGTERM/SIGINT; 2 a bad setting or a state database it refuses",
        "ENGINE_SCHEDULES_DIR, ENGINE_DATABASE_URL, ENGINE_TASK_MODULES, ENGINE_TIMEZONE, "
        "ENGINE_HOST, ENGINE_PORT, ENGINE_EXTENSIONS, ENGINE_LOG_LEVEL, ENGINE_LOG_FORMAT, "
        "ENGINE_MASS_REMOVAL_DELAY, ENGINE_CELERY_APP, ENGINE_ALLOWED_HOSTS, ENGINE_API_DOCS, "
        "ENGINE_RESET_STATE",
    )
    serve.add_argument("--schedules", help=_SCHEDULES_HELP)
    serve.add_argument("--host", help="address to bind (default: ENGINE_HOST, else 127.0.0.1)")
    serve.add_argument("--port", help="port (default: ENGINE_PORT, else 8000)")
    serve.add_argument(
        "--database", help="state database URL (default: SQLite under .engine/; postgresql://...)"
    )
    serve.add_argument("--no-watch", action="store_true", help="do not watch the files")
    serve.add_argument(
        "--reset-state",
        action="store_true",
        help="move an empty or corrupt SQLite state file aside and start afresh",
    )

    validate = _command(
        sub,
        "validate",
        "check schedule files or folders; every problem as path:line:col: error: message",
        "0 valid; 1 invalid",
        _FILE_SETTINGS + ", ENGINE_CELERY_APP",
    )
    validate.add_argument("paths", nargs="*", help="files or folders (default: schedules)")
    validate.add_argument(
        "--format",
        choices=["text", "json", "github"],
        default="text",
        help="text (default), json (one object), github (workflow annotations)",
    )

    nxt = _command(
        sub,
        "next",
        "the next fire times of a declared job or a crontab expression, one ISO 8601 per line",
        "0; 1 on bad input",
        _FILE_SETTINGS + ", ENGINE_URL",
    )
    nxt.add_argument("job_id", nargs="?", help="a job id declared under --schedules")
    nxt.add_argument("--cron", help="a crontab expression instead of a job")
    nxt.add_argument("--schedules", help=_SCHEDULES_HELP)
    nxt.add_argument("--tz", help="IANA zone (default: the job's, or UTC)")
    nxt.add_argument("-n", type=int, default=5, help="how many (default: 5)")
    nxt.add_argument("--after", help="ISO 8601 start, exclusive (default: now)")
    nxt.add_argument(
        "--url",
        help="a running engine: an interval job counts from its next run there",
    )

    plan = _command(
        sub,
        "plan",
        "what applying the files would change on a running engine: + added, ~ changed, "
        "- removed, with fire times before and after",
        "0 no change; 2 changes; 1 an error",
        _FILE_SETTINGS + ", ENGINE_URL",
    )
    plan.add_argument("--schedules", help=_SCHEDULES_HELP)
    plan.add_argument("--url", help=_URL_HELP)
    plan.add_argument("--format", choices=["text", "json"], default="text", help="output")

    jobs = _command(
        sub,
        "jobs",
        "a running engine's jobs: id, schedule, next run, last run's status and time",
        "0; 1 when the engine cannot be reached",
        "ENGINE_URL",
    )
    jobs.add_argument("--url", help=_URL_HELP)
    jobs.add_argument("--json", action="store_true", help="the jobs as JSON")

    runs = _command(
        sub,
        "runs",
        "a job's newest runs on a running engine, with errors and the last lines of their logs",
        "0; 1 an unknown job or an engine that cannot be reached",
        "ENGINE_URL",
    )
    runs.add_argument("job_id", help="the job")
    runs.add_argument("--url", help=_URL_HELP)
    runs.add_argument("-n", type=int, default=10, help="how many (default: 10)")
    runs.add_argument("--json", action="store_true", help="the runs as JSON")

    why = _command(
        sub,
        "why",
        "why a job did or did not run at an instant, from its schedule, runs and audit log",
        "0; 1 an unknown job or an engine that cannot be reached",
        "ENGINE_URL",
    )
    why.add_argument("job_id", help="the job")
    why.add_argument("--at", help="ISO 8601 instant (default: now; naive: the job's zone)")
    why.add_argument("--url", help=_URL_HELP)

    run = _command(
        sub,
        "run",
        "run a declared job's task once, here and now, with its args, timeout and retries; "
        "prints each attempt's outcome, logs and traceback; records nothing in any engine",
        "0 success; 1 failure",
        _FILE_SETTINGS,
    )
    run.add_argument("job_id", help="a job id declared under --schedules")
    run.add_argument("--schedules", help=_SCHEDULES_HELP)

    _command(sub, "schema", "the JSON Schema of a schedule file, for editors and CI", "0")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    ensure_cwd_on_path()
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if args.command == "serve" else 1  # plan's 2 means "changes"
    except (SchedctlError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `schedctl schema | head`: the reader left; say nothing more
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


def _validate(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    paths = [Path(p) for p in args.paths] or [settings.schedules_dir]
    celery = CeleryApp(
        celery_app_setting(settings),
        lambda path: resolve_task(path, settings.task_modules, celery=True),
    )
    loader = Loader(
        settings.task_modules,
        settings.timezone,
        job_check=celery.check_job,
        schedule_check=schedule_problem,
    )
    snapshot = loader.scan(paths)
    problems = snapshot.problems
    for problem in problems:
        print(problem)
    files = len(snapshot.files)
    if problems:
        bad = len({p.file for p in problems})
        print(f"FAILED: {len(problems)} problem(s) in {bad} of {files} file(s)", file=sys.stderr)
        return 1
    jobs = sum(len(r.jobs) for r in snapshot.files.values())
    print(f"OK: {jobs} job{'s' if jobs != 1 else ''} in {files} file{'s' if files != 1 else ''}")
    return 0


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(
            f"unknown timezone {name!r}; use an IANA name such as 'Europe/Berlin'"
        ) from None


def _next(args: argparse.Namespace) -> int:
    if bool(args.cron) == bool(args.job_id):
        raise UsageError("give either a JOB_ID or --cron EXPR")
    if args.n < 1:
        raise UsageError("-n must be at least 1")
    if args.cron:
        spec = JobSpec(task="tasks.preview:cron", cron=CronExpression.parse(args.cron).expression)
    else:
        spec = _declared_spec(args.job_id, args.schedules)
    zone = _zone(args.tz or spec.timezone)
    if args.after:
        try:
            after = aware(datetime.fromisoformat(args.after), zone)
        except ValueError:
            raise UsageError(
                f"--after {args.after!r} is not ISO 8601; write e.g. 2027-03-01T00:00:00+00:00"
            ) from None
    else:
        after = datetime.now(UTC)
    if args.url and args.job_id and spec.interval is not None:
        spec = _phased_by_engine(spec, args.job_id, url_from_env(args.url))
    for when in next_fire_times(spec, after, args.n, zone):
        print(when.isoformat())
    return 0


def _phased_by_engine(spec: JobSpec, job_id: str, url: str) -> JobSpec:
    """An interval job as the running engine fires it: from its next run time there."""
    from engine.surfaces.inspect import job_on

    job = job_on(url, job_id)
    if job is None:
        raise UsageError(f"no job {job_id!r} on {url}")
    if not job.get("next_run_time"):
        return spec
    # Its next run there is a tick of the job's phase: count from it.
    return spec.model_copy(update={"start": datetime.fromisoformat(job["next_run_time"])})


def _declared_spec(job_id: str, schedules: str | None) -> JobSpec:
    settings = Settings.from_env(schedules_dir=schedules)
    snapshot = Loader(settings.task_modules, settings.timezone, check_tasks=False).scan(
        [settings.schedules_dir]
    )
    for result in snapshot.files.values():
        if job_id in result.jobs:
            return result.jobs[job_id].spec
    for problem in snapshot.problems:
        print(problem, file=sys.stderr)
    raise UsageError(f"no valid job {job_id!r} under {settings.schedules_dir}")


def _schema(args: argparse.Namespace) -> int:
    print(json.dumps(file_schema(), indent=2))
    return 0


def _serve(args: argparse.Namespace) -> int:
    from engine.surfaces.server import serve

    settings = Settings.from_env(
        schedules_dir=args.schedules,
        host=args.host,
        port=args.port,
        database_url=args.database,
        watch=False if args.no_watch else None,
        reset_state=True if args.reset_state else None,
        tune_process=True,
    )
    return serve(settings)


def _plan(args: argparse.Namespace) -> int:
    from engine.surfaces.remote import plan_against

    settings = Settings.from_env(schedules_dir=args.schedules, url=args.url)
    return plan_against(settings, settings.url, args.format)


def _jobs(args: argparse.Namespace) -> int:
    from engine.surfaces.inspect import print_jobs

    return print_jobs(url_from_env(args.url), args.json)


def _runs(args: argparse.Namespace) -> int:
    from engine.surfaces.inspect import print_runs

    if args.n < 1:
        raise UsageError("-n must be at least 1")
    return print_runs(url_from_env(args.url), args.job_id, args.n, args.json)


def _why(args: argparse.Namespace) -> int:
    from engine.surfaces.inspect import print_why

    return print_why(url_from_env(args.url), args.job_id, args.at)


def _run(args: argparse.Namespace) -> int:
    from engine.surfaces.run_once import run_once

    return run_once(Settings.from_env(schedules_dir=args.schedules), args.job_id)


_COMMANDS = {
    "serve": _serve,
    "validate": _validate,
    "next": _next,
    "plan": _plan,
    "jobs": _jobs,
    "runs": _runs,
    "why": _why,
    "run": _run,
    "schema": _schema,
}
