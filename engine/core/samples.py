"""The per-job samples of ``/metrics``, kept between scrapes until their job is touched.

A scrape at 10,000 jobs used to read every job's history and next run time again (four
lookups and three datetime conversions each) although, between two scrapes, only the
jobs that ran, fired or changed can have moved. The engine says which (``touched``, from
the same hooks as the ``/jobs`` read model); everything is read again when the facade,
the history or the set of stale files is another, and always on a standby, whose history
is merged from the database without per-run hooks. While the catalog holds the same
entries (its ``version``), a scrape does not even visit the others: it reads the touched
jobs at their places and tells ``Metrics`` which places changed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine import pacing
from engine.core.touched import Touched
from engine.metrics import JobSample
from engine.scheduler.catalog import Entry, in_id_order
from engine.scheduler.facade import SchedulerFacade
from engine.state.history import History

__all__ = ["JobSamples"]


class JobSamples:
    def __init__(self) -> None:
        # Every job's sample in id order, with each job's place, kept while the catalog
        # holds the same entries (its version); a scrape reads again the touched ones.
        self._ids: list[str] = []
        self._entries: list[Entry] = []
        self._samples: list[JobSample] = []
        self._at: dict[str, int] = {}
        self._base: tuple[Any, ...] | None = None
        self._touched = Touched(lambda: len(self._samples))

    def touched(self, job_id: str) -> None:
        """The job's sample may have changed; called after the change, from any thread."""
        self._touched.add(job_id)

    def samples(
        self,
        facade: SchedulerFacade,
        history: History,
        stale: frozenset[str],
        leading: bool,
        sample: Callable[[Entry], JobSample],
    ) -> tuple[list[JobSample], list[int] | None]:
        """Every job's sample in id order, and the places of those read again since the
        last call (None: any may have changed). Only touched jobs are read again while
        the catalog holds the same entries; the others keep their sample."""
        touched, lost = self._touched.take()
        if lost:  # nobody scraped for long: read all afresh
            self._base = None
        try:
            catalog = facade.catalog
            base = (id(facade), id(history), stale, id(catalog), getattr(catalog, "version", None))
            if leading and base == self._base and base[-1] is not None:
                at, entries, samples, changed = self._at, self._entries, self._samples, []
                for job_id in touched:
                    index = at.get(job_id)
                    if index is not None:
                        samples[index] = sample(entries[index])
                        changed.append(index)
                        pacing.step()
                changed.sort()
                return samples, changed
            # The entries changed (or this is a standby, whose history is merged from the
            # database without per-run hooks): every sample afresh, in a new layout.
            kept = dict(zip(self._ids, zip(self._entries, self._samples, strict=True), strict=True))
            if not leading or base[:3] != (self._base or ())[:3]:
                kept = {}
            ordered = in_id_order(catalog)  # a scrape may run off the loop
            ids = [job_id for job_id, _ in ordered]
            entries = [entry for _, entry in ordered]
            samples = []
            for job_id, entry in zip(ids, entries, strict=True):
                found = kept.get(job_id)
                if found is None or found[0] is not entry or job_id in touched:
                    samples.append(sample(entry))
                    pacing.step()
                else:
                    samples.append(found[1])
            self._ids, self._entries, self._samples = ids, entries, samples
            self._at = {job_id: index for index, job_id in enumerate(ids)}
            self._base = base if leading else None
            return samples, None
        except BaseException:
            self._base = None  # the touched jobs are not lost: all are read again
            raise
