"""Prometheus metrics of one engine, in a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from engine.state.history import Run

__all__ = ["Metrics"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.runs = Counter(
            "schedctl_runs",
            "Finished runs by job and outcome.",
            ["job", "status"],
            registry=self.registry,
        )
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
        self.leader = Gauge(
            "schedctl_scheduler_running", "1 while this process fires jobs.", registry=self.registry
        )

    def observe(self, run: Run) -> None:
        if run.status == "running":
            if run.attempt == 1 and run.started_at is not None:
                late = (run.started_at - run.scheduled_at).total_seconds()
                self.lateness.observe(max(late, 0.0))
            return
        self.runs.labels(run.job_id, run.status).inc()
        if run.duration_s is not None:
            self.duration.observe(run.duration_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)
