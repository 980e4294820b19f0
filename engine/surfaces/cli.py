"""The ``schedctl`` command line: thin commands over the engine's pieces."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from engine.errors import SchedctlError
from engine.execution.celery_app import CeleryApp, celery_app_setting
from engine.files.cron import CronExpression
from engine.files.loader import Loader
from engine.files.preview import aware, next_fire_times
from engine.files.spec import JobSpec, file_schema
from engine.files.tasks import ensure_cwd_on_path, resolve_task
from engine.settings import Settings

__all__ = ["main"]


class UsageError(SchedctlError):
    """Bad input on the command line; exit 1 with the message."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="schedctl", description="Schedules as code.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the engine and the status API")
    serve.add_argument("--schedules", help="schedules folder (default: schedules)")
    serve.add_argument("--host", help="address to bind (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: 8000)")
    serve.add_argument("--database", help="SQLAlchemy URL (default: SQLite under .engine/)")
    serve.add_argument("--no-watch", action="store_true", help="do not watch the files")
    serve.add_argument(
        "--reset-state",
        action="store_true",
        help="move an empty or corrupt SQLite state file aside and start afresh",
    )

    validate = sub.add_parser("validate", help="check schedule files or folders")
    validate.add_argument("paths", nargs="*", help="files or folders (default: schedules)")

    nxt = sub.add_parser("next", help="the next fire times of a job or an expression")
    nxt.add_argument("job_id", nargs="?", help="a job id declared under --schedules")
    nxt.add_argument("--cron", help="a crontab expression instead of a job")
    nxt.add_argument("--schedules", help="schedules folder (default: schedules)")
    nxt.add_argument("--tz", help="IANA zone (default: the job's, or UTC)")
    nxt.add_argument("-n", type=int, default=5, help="how many (default: 5)")
    nxt.add_argument("--after", help="ISO 8601 start, exclusive (default: now)")

    plan = sub.add_parser("plan", help="what applying the files would change on an engine")
    plan.add_argument("--schedules", help="schedules folder (default: schedules)")
    plan.add_argument("--url", required=True, help="the running engine, e.g. http://127.0.0.1:8000")

    jobs = sub.add_parser("jobs", help="a running engine's jobs as a table")
    jobs.add_argument("--url", required=True, help="the running engine, e.g. http://127.0.0.1:8000")

    sub.add_parser("schema", help="JSON Schema of a schedule file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    ensure_cwd_on_path()
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except (SchedctlError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _validate(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    paths = [Path(p) for p in args.paths] or [settings.schedules_dir]
    celery = CeleryApp(
        celery_app_setting(settings), lambda path: resolve_task(path, settings.task_modules)
    )
    loader = Loader(settings.task_modules, settings.timezone, job_check=celery.check_job)
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
    for when in next_fire_times(spec, after, args.n, zone):
        print(when.isoformat())
    return 0


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
    )
    return serve(settings)


def _plan(args: argparse.Namespace) -> int:
    from engine.surfaces.remote import plan_against

    settings = Settings.from_env(schedules_dir=args.schedules)
    return plan_against(settings, args.url)


def _jobs(args: argparse.Namespace) -> int:
    from engine.surfaces.remote import print_jobs

    return print_jobs(args.url)


_COMMANDS = {
    "serve": _serve,
    "validate": _validate,
    "next": _next,
    "plan": _plan,
    "jobs": _jobs,
    "schema": _schema,
}
