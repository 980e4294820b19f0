"""Time windows and expected fire times: when an engine must fire, and what was due."""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime

from engine.files.cron import CronExpression
from tests.torture.project import JobPlan

__all__ = ["Interval", "expected", "inside", "overlap", "same_window", "subtract"]

Interval = tuple[float, float]


def subtract(window: Interval, holes: Iterable[Interval]) -> list[Interval]:
    parts = [window]
    for h_start, h_end in sorted(holes):
        next_parts = []
        for start, end in parts:
            if h_end <= start or h_start >= end:
                next_parts.append((start, end))
                continue
            if h_start > start:
                next_parts.append((start, h_start))
            if h_end < end:
                next_parts.append((h_end, end))
        parts = next_parts
    return parts


def overlap(span: Interval, windows: list[Interval]) -> float:
    start, end = span
    return sum(max(0.0, min(end, w_end) - max(start, w_start)) for w_start, w_end in windows)


def same_window(start: float, end: float, windows: list[Interval]) -> bool:
    """Both instants in one serving window: no fault came between them."""
    return any(w_start <= start and end <= w_end for w_start, w_end in windows)


def inside(at: float, windows: list[Interval]) -> bool:
    return any(start <= at <= end for start, end in windows)


def expected(job: JobPlan, start: float, end: float, seen: list[float]) -> list[float]:
    """The job's scheduled times in [start, end] (an interval job's phase from ``seen``)."""
    if job.cron is not None:
        times = []
        after = datetime.fromtimestamp(start, UTC)
        for when in CronExpression.parse(job.cron).iter_after(after, UTC):
            at = when.timestamp()
            if at > end:
                break
            times.append(at)
        return times
    assert job.interval_s is not None
    if not seen:
        return []
    phase = min(seen)
    step = job.interval_s
    first = phase + math.ceil((start - phase) / step) * step
    count = max(0, math.floor((end - first) / step) + 1)
    return [first + i * step for i in range(count)]


# -- the check ---------------------------------------------------------------------------
