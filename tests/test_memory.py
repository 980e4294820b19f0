"""Memory a large answer freed goes back to the system (``schedctl serve`` only)."""

from __future__ import annotations

import importlib
import itertools
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import ModuleType

import pytest

from engine.core import memory
from engine.settings import Settings
from tests.conftest import MakePackage
from tests.harness import engine_settings, eventually, running

TASKS = "mem_tasks"

needs_glibc = pytest.mark.skipif(
    not memory.release_freed(), reason="no glibc malloc_trim here (macOS, musl): nothing to test"
)


@needs_glibc
def test_freed_memory_in_the_middle_of_the_heap_goes_back_to_the_system() -> None:
    """What the process frees below a live allocation stays in its RSS until trimmed."""
    script = textwrap.dedent(
        """
        import os
        from engine.core.memory import release_freed

        def rss():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

        parts = [bytes(2000) + bytes([n % 256]) for n in range(40_000)]  # 80 MB in pieces
        plug = [bytes(2000) for _ in range(100)]  # live, above them in the heap
        del parts
        before = rss()
        assert release_freed()
        print(before - rss())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert int(done.stdout) > 40 * 2**20, done.stdout


@pytest.fixture
def jobs(make_package: MakePackage) -> ModuleType:
    make_package(TASKS, {"jobs": "def ping():\n    pass\n"})
    return importlib.import_module(f"{TASKS}.jobs")


def _many(settings: Settings, count: int) -> None:
    lines = ["jobs:"]
    for n in range(count):
        lines += [f"  job-{n:05d}:", f"    task: {TASKS}.jobs:ping", '    cron: "0 3 * * *"']
    (settings.schedules_dir / "many.yaml").write_text("\n".join(lines) + "\n")


@needs_glibc
async def test_large_answers_are_followed_by_a_trim_at_most_every_gap(
    tmp_path: Path, jobs: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trim follows a large answer, and the last of a burst of them, but two trims
    are never closer than the gap (small answers never ask for one)."""
    gap = 0.5
    monkeypatch.setattr(memory, "GAP_S", gap)
    trims: list[float] = []
    real = memory.release_freed

    def recorded() -> bool:
        trims.append(time.monotonic())
        return real()

    monkeypatch.setattr(memory, "release_freed", recorded)
    base = engine_settings(tmp_path, TASKS, shutdown_grace=1)
    tuned = Settings(**{**base.__dict__, "tune_process": True})
    _many(tuned, 3000)
    async with running(tuned) as engine:
        trimmer = engine.app.state.engine.trimmer
        assert len((await engine.client.get("/status")).content) < memory.LARGE_ANSWER
        assert len((await engine.client.get("/jobs/job-00001")).content) < memory.LARGE_ANSWER
        assert trims == []
        assert len((await engine.client.get("/jobs")).content) >= memory.LARGE_ANSWER
        await eventually(lambda: trimmer.trims == 1, what="a trim after the large answer")
        for _ in range(3):  # bursts of large answers
            for path in ("/jobs", "/specs", "/metrics", "/jobs", "/specs"):
                assert (await engine.client.get(path)).status_code == 200
            sent = time.monotonic()
            await eventually(lambda at=sent: trims[-1] >= at, what="a trim after the burst")
        await eventually(lambda: trimmer.trims == len(trims), what="the last trim's end")
        assert 4 <= len(trims) < 16  # 16 large answers
        assert all(later - earlier >= gap * 0.99 for earlier, later in itertools.pairwise(trims))


async def test_an_embedded_engine_never_trims(
    tmp_path: Path, jobs: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(memory, "release_freed", lambda: calls.append(1) or True)
    settings = engine_settings(tmp_path, TASKS, shutdown_grace=1)
    _many(settings, 3000)
    async with running(settings) as engine:
        assert len((await engine.client.get("/jobs")).content) >= memory.LARGE_ANSWER
        assert not engine.app.state.engine.trimmer.enabled
    assert calls == []
