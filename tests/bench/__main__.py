"""Run the benchmarks and print one table: ``python -m tests.bench [name ...]``.

Every ``tests/bench/bench_*.py`` defines ``run() -> list[dict]``; each dict is one row with
the keys ``benchmark`` and ``schedctl``, and optionally ``raw``, ``ratio``, ``target``,
``ok`` (bool) and ``note`` (a footnote, e.g. what ``raw`` measures). Names on the command
line pick modules: ``validate`` or ``bench_validate``. The exit code is 1 when a benchmark
fails to run or misses its target.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
COLUMNS = (
    ("benchmark", "benchmark"),
    ("schedctl", "schedctl"),
    ("raw", "raw APScheduler"),
    ("ratio", "ratio"),
    ("target", "target"),
    ("ok", "ok"),
)


def available() -> list[str]:
    return sorted(path.stem.removeprefix("bench_") for path in HERE.glob("bench_*.py"))


def cell(key: str, value: Any) -> str:
    if value is None or value == "":
        return "-"
    if key == "ok":
        return "yes" if value else "NO"
    if key == "ratio" and isinstance(value, int | float):
        return f"{value:.2f}x"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def render(rows: Sequence[dict[str, Any]]) -> str:
    notes: list[str] = []
    table = []
    for row in rows:
        cells = [cell(key, row.get(key)) for key, _ in COLUMNS]
        if row.get("note"):
            if row["note"] not in notes:
                notes.append(row["note"])
            cells[0] += f" [{notes.index(row['note']) + 1}]"
        table.append(cells)
    headers = [title for _, title in COLUMNS]
    widths = [max(len(r[i]) for r in [headers, *table]) for i in range(len(headers))]
    lines = [
        " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(),
        "-|-".join("-" * w for w in widths),
        *(" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table),
    ]
    lines += [f"[{i}] {note}" for i, note in enumerate(notes, 1)]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (all: {available()})")
    args = parser.parse_args(argv)
    names = [name.removeprefix("bench_").removesuffix(".py") for name in args.names]
    unknown = sorted(set(names) - set(available()))
    if unknown:
        parser.error(f"no benchmark {', '.join(unknown)}; known: {', '.join(available())}")
    rows: list[dict[str, Any]] = []
    failed = False
    for name in names or available():
        print(f"running bench_{name} ...", file=sys.stderr, flush=True)
        try:
            module = importlib.import_module(f"{__package__ or 'tests.bench'}.bench_{name}")
            rows.extend(module.run())
        except Exception:
            traceback.print_exc()
            rows.append({"benchmark": f"{name}: failed to run", "schedctl": None, "ok": False})
            failed = True
    print(render(rows))
    return 1 if failed or any(row.get("ok") is False for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
