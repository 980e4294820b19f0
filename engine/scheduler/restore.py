"""Putting back what the previous process saved: declared and runtime jobs, as data.

Every row is untrusted: one that does not decode (a crafted or damaged row, a runtime
job pickled by the first release that does not unpickle safely) is reported and skipped,
never a reason not to start. A legacy pickled runtime job that does convert is rewritten
as JSON data.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from engine.files.spec import Essence, JobSpec, fingerprint_text, kept
from engine.reconciler import Desired
from engine.scheduler.catalog import Entry, build_job
from engine.scheduler.codec import decode_runtime, from_legacy_pickle
from engine.scheduler.jobs import runtime_task, task_of, trigger_zone
from engine.state.db import JobRow

if TYPE_CHECKING:
    from engine.scheduler.facade import SchedulerFacade

__all__ = ["restore"]

log = logging.getLogger("schedctl.scheduler")


def restore(
    facade: SchedulerFacade,
    rows: Iterable[JobRow],
    desired: Mapping[str, Desired],
    specs: dict[str, JobSpec],
) -> list[str]:
    """Put the saved jobs in ``facade`` with their next run times; return what was skipped.

    ``specs`` caches parsed specs by fingerprint across calls (a standby's refresh).
    """
    now = datetime.now(UTC)
    skipped = []
    for row in rows:
        try:
            if row.source == "runtime":
                _runtime(facade, row)
            else:
                _declared(facade, row, desired.get(row.id), now, specs)
        except Exception as exc:
            message = f"job {row.id[:128]!r} in the state database could not be restored ({exc})"
            log.error("Skipping %s.", message)
            skipped.append(message)
    return skipped


def _runtime(facade: SchedulerFacade, row: JobRow) -> None:
    data = row.runtime
    converted = False
    if data is None and row.state is not None:
        data = from_legacy_pickle(row.state)
        converted = True
    task, trigger, args, kwargs, options = decode_runtime(data)
    next_run = (
        datetime.fromtimestamp(row.next_run_time, UTC) if row.next_run_time is not None else None
    )
    if row.runtime_paused:
        next_run = None
    job = build_job(facade.scheduler, row.id, trigger, next_run, **options)
    facade.store.add_job(job)
    tz = trigger_zone(trigger)
    facade.catalog[row.id] = Entry(
        row.id,
        "runtime",
        runtime_paused=row.runtime_paused,
        task=runtime_task(task, args, kwargs, options["max_instances"], tz),
        runtime=data,
        tz=tz,
    )
    if converted:
        facade.mark(row.id)  # written back as data


def _declared(
    facade: SchedulerFacade,
    row: JobRow,
    want: Desired | None,
    now: datetime,
    specs: dict[str, JobSpec],
) -> None:
    if row.essence_json is None:
        raise ValueError("a declared job without its spec")
    fp = fingerprint_text(row.essence_json)
    spec = want.spec if want is not None and want.fingerprint == fp else specs.get(fp)
    if spec is None:
        spec = specs[fp] = kept(JobSpec.model_validate_json(row.essence_json))
    entry = Entry(
        row.id,
        "declared",
        row.file,
        row.line,
        row.column,
        Essence(spec),
        fp,
        spec,
        row.runtime_paused,
    )
    entry.task = task_of(spec)
    entry.tz = entry.task.tz
    facade.catalog[row.id] = entry
    if row.done:
        return
    next_run = (
        datetime.fromtimestamp(row.next_run_time, UTC) if row.next_run_time is not None else None
    )
    facade.store.add_job(facade.new_job(row.id, spec, now, next_run))
