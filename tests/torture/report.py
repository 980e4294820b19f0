"""A scenario's report: rows of figures, some of them MUST rows, as a table and as JSON."""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Report", "Row", "counts", "quantile", "seconds", "spread"]


@dataclass
class Row:
    name: str
    value: str
    must: str | None = None  # the requirement; None: a figure only
    ok: bool | None = None


@dataclass
class Report:
    scenario: str
    size: str
    description: str
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def add(self, name: str, value: Any, must: str | None = None, ok: bool | None = None) -> None:
        self.rows.append(Row(name, str(value), must, ok))

    @property
    def failures(self) -> list[Row]:
        return [row for row in self.rows if row.ok is False]

    def table(self) -> str:
        width = max(len(r.name) for r in self.rows)
        value_width = min(max(len(r.value) for r in self.rows), 60)
        lines = [f"== {self.scenario} [{self.size}]: {self.description}"]
        for row in self.rows:
            verdict = "" if row.ok is None else ("ok" if row.ok else "FAIL")
            must = f"must {row.must}" if row.must else ""
            lines.append(
                f"  {row.name:<{width}}  {row.value:<{value_width}}  {must:<16} {verdict}".rstrip()
            )
        return "\n".join(lines)

    def write(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        stem = folder / f"{self.scenario}-{self.size}"
        payload = {
            "scenario": self.scenario,
            "size": self.size,
            "description": self.description,
            "ok": not self.failures,
            "rows": [asdict(row) for row in self.rows],
            "details": self.details,
        }
        stem.with_suffix(".json").write_text(json.dumps(payload, indent=2, default=str))
        stem.with_suffix(".txt").write_text(self.table() + "\n")
        return stem.with_suffix(".json")


def quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def seconds(value: float | None, digits: int = 2) -> str:
    return "never" if value is None else f"{value:.{digits}f} s"


def spread(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    missing = len(values) - len(known)
    if not values:
        return "n/a"
    text = (
        f"min {min(known):.2f} / median {statistics.median(known):.2f} / max {max(known):.2f} s"
        if known
        else "no fire at all"
    )
    return text + (f"; {missing} of {len(values)} never" if missing else f" (n={len(values)})")


def counts(counter: Counter[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counter.most_common())
