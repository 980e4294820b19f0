"""The jobs touched since a read model last looked: told from any thread, taken by it.

``/jobs`` and ``/metrics`` each keep every job's part and redo only the jobs touched since
their last build (a run, a fire, an edit). A read model nobody reads must not pile up
ids: past its size and 1,024 more the set is dropped, and the next ``take`` says that
anything may have changed, so the reader builds afresh and no change is lost.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["Touched"]

SLACK = 1024  # ids beyond the reader's own size kept before everything is read again


class Touched:
    def __init__(self, size: Callable[[], int]) -> None:
        self._size = size  # how many jobs the reader holds now
        self._ids: set[str] = set()
        self._lost = False
        self._bound = 0  # the reader's size and SLACK, as last asked (asked when passed)
        self._lock = threading.Lock()  # a run may begin in a task thread

    def add(self, job_id: str) -> None:
        """The job may have changed; called after the change, from any thread (several
        times per fire: the reader's size is asked only when the set outgrows the bound)."""
        # Already there: nothing to do, and no lock to take (a fire adds its job three
        # times: its next run time, its run's start and end). Safe without the lock: the
        # change came before this look, and a ``take`` that swaps the set out after the
        # look hands the id on with it.
        if job_id in self._ids:
            return
        with self._lock:
            ids = self._ids
            ids.add(job_id)
            if len(ids) > self._bound:
                self._bound = self._size() + SLACK
                if len(ids) > self._bound:
                    ids.clear()
                    self._lost = True

    def take(self) -> tuple[set[str], bool]:
        """The ids touched since the last take, and whether some were dropped (then the
        reader must read every job again)."""
        with self._lock:
            ids, lost = self._ids, self._lost
            self._ids, self._lost = set(), False
        return ids, lost

    def __len__(self) -> int:
        return len(self._ids)
