"""Prometheus metrics of one engine, in a registry of its own.

Per-job series (label ``job_id``; ``job`` is Prometheus's own label for the scrape
target) are not kept as client-library children updated on every fire: they are read
from the engine's state when ``/metrics`` is scraped, so firing pays a dict increment
and a scrape pays for what it shows. They are written by ``render`` itself, each job's
lines kept while its sample is unchanged, byte for byte what the client library would
write (``_JobCollector`` says the same through the library, for other registries).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from operator import itemgetter

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from engine import pacing
from engine.joined import Joined
from engine.state.history import Run

__all__ = ["JobSample", "Metrics"]


@dataclass(frozen=True, slots=True)
class JobSample:
    """What the per-job series say of one job at scrape time."""

    job_id: str
    last_success: float | None  # UTC timestamps
    last_run: float | None
    last_status: str | None
    next_run: float | None
    consecutive_failures: int
    stale: bool


class _JobCollector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        runs = CounterMetricFamily(
            "schedctl_runs", "Finished runs by job and outcome.", labels=["job_id", "status"]
        )
        for (job_id, status), count in sorted(self.metrics.counts.items()):
            runs.add_metric([job_id, status], count)
        yield runs
        success = GaugeMetricFamily(
            "schedctl_job_last_success_timestamp_seconds",
            "When the job's last successful run finished.",
            labels=["job_id"],
        )
        last = GaugeMetricFamily(
            "schedctl_job_last_run_timestamp_seconds",
            "When the job's last run finished, by its status.",
            labels=["job_id", "status"],
        )
        upcoming = GaugeMetricFamily(
            "schedctl_job_next_run_timestamp_seconds",
            "When the job fires next (absent while paused or done).",
            labels=["job_id"],
        )
        failures = GaugeMetricFamily(
            "schedctl_job_consecutive_failures",
            "Failed or timed-out runs since the job's last success.",
            labels=["job_id"],
        )
        stale = GaugeMetricFamily(
            "schedctl_job_stale",
            "1 while the job's file is invalid and the job runs as last applied.",
            labels=["job_id"],
        )
        for sample in self.metrics.job_samples():
            labels = [sample.job_id]
            if sample.last_success is not None:
                success.add_metric(labels, sample.last_success)
            if sample.last_run is not None and sample.last_status is not None:
                last.add_metric([sample.job_id, sample.last_status], sample.last_run)
            if sample.next_run is not None:
                upcoming.add_metric(labels, sample.next_run)
            failures.add_metric(labels, sample.consecutive_failures)
            stale.add_metric(labels, 1 if sample.stale else 0)
        yield from (success, last, upcoming, failures, stale)


_FAMILIES = (  # name, type, help: as _JobCollector declares them
    ("schedctl_runs", "counter", "Finished runs by job and outcome."),
    (
        "schedctl_job_last_success_timestamp_seconds",
        "gauge",
        "When the job's last successful run finished.",
    ),
    (
        "schedctl_job_last_run_timestamp_seconds",
        "gauge",
        "When the job's last run finished, by its status.",
    ),
    (
        "schedctl_job_next_run_timestamp_seconds",
        "gauge",
        "When the job fires next (absent while paused or done).",
    ),
    (
        "schedctl_job_consecutive_failures",
        "gauge",
        "Failed or timed-out runs since the job's last success.",
    ),
    (
        "schedctl_job_stale",
        "gauge",
        "1 while the job's file is invalid and the job runs as last applied.",
    ),
)


def _label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _job_lines(sample: JobSample) -> tuple[bytes, bytes, bytes, bytes, bytes]:
    """One job's lines of the five gauge families, in the client library's format (as
    UTF-8: a scrape joins bytes, not 4 MB of text to encode again)."""
    job = _label(sample.job_id)
    success = last = upcoming = ""
    if sample.last_success is not None:
        success = (
            f'schedctl_job_last_success_timestamp_seconds{{job_id="{job}"}} '
            f"{floatToGoString(sample.last_success)}\n"
        )
    if sample.last_run is not None and sample.last_status is not None:
        last = (
            f'schedctl_job_last_run_timestamp_seconds{{job_id="{job}",'
            f'status="{_label(sample.last_status)}"}} {floatToGoString(sample.last_run)}\n'
        )
    if sample.next_run is not None:
        upcoming = (
            f'schedctl_job_next_run_timestamp_seconds{{job_id="{job}"}} '
            f"{floatToGoString(sample.next_run)}\n"
        )
    failures = (
        f'schedctl_job_consecutive_failures{{job_id="{job}"}} '
        f"{floatToGoString(sample.consecutive_failures)}\n"
    )
    stale = f'schedctl_job_stale{{job_id="{job}"}} {"1.0" if sample.stale else "0.0"}\n'
    return (
        success.encode(),
        last.encode(),
        upcoming.encode(),
        failures.encode(),
        stale.encode(),
    )


def _same(written: JobSample, sample: JobSample) -> bool:
    return written is sample or written == sample


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.counts: dict[tuple[str, str], int] = {}
        # Every job's sample in order, and the places of those that changed since the
        # last call (None: any may have).
        self.source: Callable[[], tuple[list[JobSample], list[int] | None]] = lambda: ([], None)
        # The registry holds the engine-wide series; the per-job ones are written by
        # render() (see the module docstring), so a scrape at 10k jobs costs milliseconds.
        self.job_collector = _JobCollector(self)
        # The sample each job's lines were written from, in the families' order: the
        # lines themselves are kept only in the families' joined blocks.
        self._written: list[JobSample] = []
        # Each gauge family's lines, one per job in sample order.
        self._families = [Joined() for _ in _FAMILIES[1:]]
        # The places ``source`` said changed since the last render, whoever asked it.
        self._changed: set[int] = set()
        self._all_changed = True
        # ``schedctl_runs_total``: each line kept with the count it says, in label order;
        # while no (job, status) comes or goes, a scrape writes again only the lines of
        # those counted since the last one.
        self._count_lines: dict[tuple[str, str], tuple[int, bytes]] = {}
        self._count_order: list[tuple[str, str]] = []
        self._count_at: dict[tuple[str, str], int] = {}
        self._count_text = Joined()
        self._counted: set[tuple[str, str]] = set()
        self._counted_lock = threading.Lock()  # runs finish on the loop and in threads
        self._render_lock = threading.Lock()  # scrapes render one at a time
        # No job label on histograms: 15 series per job would outweigh the jobs themselves.
        self.duration = Histogram(
            "schedctl_run_duration_seconds",
            "Duration of finished attempts.",
            registry=self.registry,
        )
        self.lateness = Histogram(
            "schedctl_fire_lateness_seconds",
            "How late runs started after their scheduled time.",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 60),
            registry=self.registry,
        )
        self.jobs = Gauge(
            "schedctl_jobs",
            "Jobs known to the engine by source.",
            ["source"],
            registry=self.registry,
        )
        self.reconciles = Counter(
            "schedctl_reconciles",
            "Reconciles by outcome (ok, errors).",
            ["outcome"],
            registry=self.registry,
        )
        self.reconcile_seconds = Histogram(
            "schedctl_reconcile_duration_seconds",
            "Time to scan files and apply a plan.",
            registry=self.registry,
        )
        self.reconcile_errors = Gauge(
            "schedctl_reconcile_errors",
            "Schedule files that are invalid now (their jobs run as last applied).",
            registry=self.registry,
        )
        self.pending_removal = Gauge(
            "schedctl_pending_removal_jobs",
            "Jobs whose removal is held by the mass-removal delay.",
            registry=self.registry,
        )
        self.loop_lag = Gauge(
            "schedctl_loop_lag_seconds",
            "How late the event loop ran its last heartbeat.",
            registry=self.registry,
        )
        self.leader = Gauge(
            "schedctl_leader", "1 while this process leads (fires jobs).", registry=self.registry
        )
        self.database_up = Gauge(
            "schedctl_database_up",
            "1 while the state database answers.",
            registry=self.registry,
        )
        self.database_up.set(1)

    def observe(self, run: Run) -> None:
        status = run.status
        if status == "running":
            if run.attempt == 1 and run.started_at is not None:
                late = (run.started_at - run.scheduled_at).total_seconds()
                self.lateness.observe(max(late, 0.0))
            return
        if status == "queued":
            return
        key = (run.job_id, status)
        with self._counted_lock:
            self.counts[key] = self.counts.get(key, 0) + 1
            self._counted.add(key)
        if run.started_at is not None and run.finished_at is not None:
            self.duration.observe((run.finished_at - run.started_at).total_seconds())

    def forget(self, job_id: str) -> None:
        for key in [k for k in self.counts if k[0] == job_id]:
            del self.counts[key]
            self._count_lines.pop(key, None)
        self._count_order = []  # made again at the next render

    def job_samples(self) -> list[JobSample]:
        """Every job's sample, for ``job_collector`` (another registry's scrape): what
        changed is kept for the next ``render``, which would miss it otherwise."""
        with self._render_lock:
            return self._take_samples()

    def _take_samples(self) -> list[JobSample]:
        """``source()``, remembering which places changed (under the render lock)."""
        samples, changed = self.source()
        if changed is None:
            self._all_changed = True
        else:
            self._changed.update(changed)
        return samples

    def render(self) -> bytes:
        return b"".join(self.render_pieces())

    def render_pieces(self) -> list[bytes]:
        """``render()`` as the pieces whose join it is."""
        with self._render_lock:
            return [*self._job_parts(), generate_latest(self.registry)]

    def render_jobs(self) -> bytes:
        """The per-job families, as ``generate_latest`` would write ``job_collector``'s."""
        with self._render_lock:
            return b"".join(self._job_parts())

    def _job_parts(self) -> list[bytes]:
        out: list[bytes] = []
        name, kind, doc = _FAMILIES[0]
        out.append(f"# HELP {name}_total {doc}\n# TYPE {name}_total {kind}\n".encode())
        counts, written = self.counts, self._count_lines
        with self._counted_lock:
            counted, self._counted = self._counted, set()
        if len(self._count_order) != len(counts):  # a new (job, status): a new order
            order = self._count_order = sorted(counts)
            self._count_at = {key: index for index, key in enumerate(order)}
            text = self._count_text = Joined([b""] * len(order))
            counted = set(order)
        else:
            text = self._count_text
        at = self._count_at
        for key in counted:
            index = at.get(key)
            if index is None:  # counted, then forgotten: the next order leaves it out
                continue
            count = counts.get(key)
            if count is None:
                text[index] = b""
                continue
            line = written.get(key)
            if line is None or line[0] != count:
                job_id, status = key
                line = written[key] = (
                    count,
                    f'schedctl_runs_total{{job_id="{_label(job_id)}",status="{_label(status)}"}} '
                    f"{floatToGoString(count)}\n".encode(),
                )
            text[index] = line[1]
        out += text.blocks()
        families, kept = self._families, self._written
        samples = self._take_samples()
        changed, self._changed = self._changed, set()
        all_changed, self._all_changed = self._all_changed, False
        if all_changed or len(kept) != len(samples):  # a new layout: every job's lines
            was = {sample.job_id: index for index, sample in enumerate(kept)}
            rows = []
            for sample in samples:
                index = was.get(sample.job_id)
                if index is not None and _same(kept[index], sample):
                    rows.append(tuple(family[index] for family in families))
                else:
                    rows.append(_job_lines(sample))
                    pacing.step()
            families = self._families = [
                Joined(map(itemgetter(index), rows)) for index in range(len(families))
            ]
            self._written = list(samples)
        else:  # the same jobs: the lines of those whose sample changed
            for index in sorted(changed):
                sample = samples[index]
                if _same(kept[index], sample):
                    continue  # an equal sample: its lines are in place
                kept[index] = sample
                for family, part in zip(families, _job_lines(sample), strict=True):
                    family[index] = part
                pacing.step()
        for (name, kind, doc), family in zip(_FAMILIES[1:], families, strict=True):
            out.append(f"# HELP {name} {doc}\n# TYPE {name} {kind}\n".encode())
            out += family.blocks()
        return out
