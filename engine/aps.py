"""Public import path of the module-level runtime API: ``from engine import aps``."""

from engine.surfaces.aps import (
    add_cron_job,
    add_date_job,
    add_interval_job,
    add_job,
    get_job,
    get_jobs,
    pause_job,
    remove_job,
    resume_job,
    run_job,
)

__all__ = [
    "add_cron_job",
    "add_date_job",
    "add_interval_job",
    "add_job",
    "get_job",
    "get_jobs",
    "pause_job",
    "remove_job",
    "resume_job",
    "run_job",
]
