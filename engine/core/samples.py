"""The per-job samples of ``/metrics``, kept between scrapes until their job is touched.

A scrape at 10,000 jobs used to read every job's history and next run time again (four
lookups and three datetime conversions each) although, between two scrapes, only the
jobs that ran, fired or changed can have moved. The engine says which (``touched``, from
the same hooks as the ``/jobs`` read model); everything is read again when the facade,
the history or the set of stale files is another, and always on a standby, whose history
is merged from the database without per-run hooks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from engine.metrics import JobSample
from engine.scheduler.catalog import Entry
from engine.scheduler.facade import SchedulerFacade
from engine.state.history import History

__all__ = ["JobSamples"]


class JobSamples:
    def __init__(self) -> None:
        self._kept: dict[str, tuple[Entry, JobSample]] = {}
        self._base: tuple[Any, ...] | None = None
        self._touched: set[str] = set()
        self._lock = threading.Lock()  # a run may begin in a task thread

    def touched(self, job_id: str) -> None:
        """The job's sample may have changed; called after the change, from any thread."""
        with self._lock:
            touched = self._touched
            touched.add(job_id)
            if len(touched) > len(self._kept) + 1024:  # nobody scrapes: read all afresh
                touched.clear()
                self._base = None

    def samples(
        self,
        facade: SchedulerFacade,
        history: History,
        stale: frozenset[str],
        leading: bool,
        sample: Callable[[Entry], JobSample],
    ) -> list[JobSample]:
        """Every job's sample in catalog order, each read again only if it may have moved."""
        with self._lock:
            touched, self._touched = self._touched, set()
        base = (id(facade), id(history), stale)
        if not leading or base != self._base:
            self._kept, self._base = {}, (base if leading else None)
        kept, out = self._kept, []
        entries = list(facade.catalog.items())
        for job_id, entry in entries:
            found = kept.get(job_id)
            if found is None or found[0] is not entry or job_id in touched:
                found = kept[job_id] = (entry, sample(entry))
            out.append(found[1])
        if len(kept) > len(entries) + 1024:  # jobs gone
            live = {job_id for job_id, _ in entries}
            for job_id in [j for j in kept if j not in live]:
                del kept[job_id]
        return out
