"""How changes reach a running engine: file watching, symlink swaps, SIGHUP, resync."""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    ServeFactory,
    Server,
    swap_symlink,
    wait_for,
    write,
    write_atomic,
)

pytestmark = pytest.mark.e2e

JOB = """
jobs:
  {job_id}:
    task: tasks.e2e:noop
    cron: "0 4 * * *"
    args: [{arg}]
"""


def _args(server: Server, job_id: str) -> list[str] | None:
    job = server.jobs().get(job_id)
    return None if job is None else job["args"]


def _holds(condition: Callable[[], bool], seconds: float, what: str) -> None:
    """Check that ``condition`` stays true for ``seconds`` (a negative observation)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert condition(), what
        time.sleep(0.05)


def _seen_within(server: Server, job_id: str, arg: str, limit: float) -> float:
    """Wait for ``args == [arg]``; return the seconds it took; fail past ``limit``."""
    started = time.monotonic()
    wait_for(
        lambda: _args(server, job_id) == [arg],
        timeout=limit,
        what=f"{job_id} args {arg}",
        interval=0.01,
    )
    return time.monotonic() - started


def test_kubernetes_configmap_swap(serve: ServeFactory, tmp_path: Path) -> None:
    # The layout the kubelet writes for a ConfigMap volume with keys jobs.yaml, more.yaml.
    mount = tmp_path / "mount"
    first = mount / "..2026_11_27_a"
    write(first / "jobs.yaml", JOB.format(job_id="cm", arg="v1"))
    write(first / "more.yaml", JOB.format(job_id="cm-more", arg="m1"))
    (mount / "..data").symlink_to("..2026_11_27_a")
    (mount / "jobs.yaml").symlink_to("..data/jobs.yaml")
    (mount / "more.yaml").symlink_to("..data/more.yaml")

    server = serve(mount)
    jobs = server.jobs()
    assert sorted(jobs) == ["cm", "cm-more"], "each job once: '..' folders are skipped"
    assert jobs["cm"]["file"].endswith("mount/jobs.yaml")
    before = jobs["cm-more"]

    for stamp, arg in (("..2026_11_27_b", "v2"), ("..2026_11_27_c", "v3")):
        old = (mount / "..data").resolve()
        write(mount / stamp / "jobs.yaml", JOB.format(job_id="cm", arg=arg))
        write(mount / stamp / "more.yaml", JOB.format(job_id="cm-more", arg="m1"))
        swap_symlink(mount / "..data", stamp)
        shutil.rmtree(old)
        print(f"ConfigMap swap visible after {_seen_within(server, 'cm', arg, 2.0):.3f}s")
        jobs = server.jobs()
        assert sorted(jobs) == ["cm", "cm-more"]
        assert jobs["cm-more"]["next_run_time"] == before["next_run_time"]
        assert server.status()["last_reconcile"]["errors"] == []


def test_git_sync_symlink_swap(serve: ServeFactory, tmp_path: Path) -> None:
    # git-sync: root/link -> .worktrees/<rev>, swapped atomically to each new revision.
    root = tmp_path / "git"
    worktrees = root / ".worktrees"
    write(worktrees / "rev1" / "jobs.yaml", JOB.format(job_id="gs", arg="r1"))
    write(worktrees / "rev1" / "team" / "ops.yaml", JOB.format(job_id="gs-ops", arg="o1"))
    link = root / "link"
    link.symlink_to(".worktrees/rev1")

    server = serve(link)
    assert sorted(server.jobs()) == ["gs", "gs-ops"]

    for rev, arg in (("rev2", "r2"), ("rev3", "r3")):
        old = link.resolve()
        shutil.copytree(old, worktrees / rev)
        write(worktrees / rev / "jobs.yaml", JOB.format(job_id="gs", arg=arg))
        swap_symlink(link, f".worktrees/{rev}")
        shutil.rmtree(old)
        print(f"git-sync swap visible after {_seen_within(server, 'gs', arg, 2.0):.3f}s")
        # The watch follows the new target: an edit inside it is seen too.
        write(worktrees / rev / "team" / "ops.yaml", JOB.format(job_id="gs-ops", arg=f"o-{rev}"))
        _seen_within(server, "gs-ops", f"o-{rev}", limit=2.0)
    assert server.status()["last_reconcile"]["errors"] == []


def test_edit_right_after_a_swap_is_seen(serve: ServeFactory, tmp_path: Path) -> None:
    root = tmp_path / "git"
    worktrees = root / ".worktrees"
    write(worktrees / "rev0" / "jobs.yaml", JOB.format(job_id="gs", arg="r0"))
    write(worktrees / "rev0" / "team" / "ops.yaml", JOB.format(job_id="gs-ops", arg="o0"))
    link = root / "link"
    link.symlink_to(".worktrees/rev0")
    server = serve(link)
    # Each round misses with a probability of roughly 40-70 % here; 20 rounds make a
    # pass by luck negligible (< 1e-4), and the first miss ends the test.
    for n in range(1, 21):
        old = link.resolve()
        new = worktrees / f"rev{n}"
        shutil.copytree(old, new)
        write(new / "jobs.yaml", JOB.format(job_id="gs", arg=f"r{n}"))
        swap_symlink(link, f".worktrees/rev{n}")
        shutil.rmtree(old)
        wait_for(lambda n=n: _args(server, "gs") == [f"r{n}"], 2.0, "the swap", 0.005)
        write(new / "team" / "ops.yaml", JOB.format(job_id="gs-ops", arg=f"o{n}"))
        _seen_within(server, "gs-ops", f"o{n}", limit=1.0)


def test_edit_to_visible_latency(
    serve: ServeFactory, project: Path, tmp_path: Path, record_property: Callable[..., None]
) -> None:
    schedules = project / "schedules"
    target = write(schedules / "jobs.yaml", JOB.format(job_id="lat", arg="a0"))
    server = serve()
    latencies: dict[str, list[float]] = {"atomic-rename": [], "in-place": []}
    for i in range(1, 6):
        for kind, save in (("atomic-rename", write_atomic), ("in-place", write)):
            arg = f"{kind[0]}{i}"
            save(target, JOB.format(job_id="lat", arg=arg))
            latencies[kind].append(_seen_within(server, "lat", arg, limit=1.0))
    report = {
        kind: {
            "p50_ms": round(statistics.median(values) * 1000),
            "max_ms": round(max(values) * 1000),
            "all_ms": [round(v * 1000) for v in values],
        }
        for kind, values in latencies.items()
    }
    record_property("edit_to_visible_latency", report)
    print(f"edit-to-visible latency: {report}")
    for kind, values in latencies.items():
        assert statistics.median(values) < 0.5, (kind, report)

    # A new nested folder is watched too.
    nested = write(schedules / "teams" / "ops" / "new.yaml", JOB.format(job_id="nested", arg="n1"))
    _seen_within(server, "nested", "n1", limit=2.0)
    write(nested, JOB.format(job_id="nested", arg="n2"))
    _seen_within(server, "nested", "n2", limit=2.0)

    # Skipped names: dot files, editor swap/backup files, non-YAML files.
    status = server.status()
    write(schedules / ".hidden.yaml", JOB.format(job_id="hidden", arg="x"))
    write(schedules / "jobs.yaml~", JOB.format(job_id="backup", arg="x"))
    write(schedules / "notes.txt", JOB.format(job_id="notes", arg="x"))
    write(schedules / "extra.yml", JOB.format(job_id="yml", arg="y1"))
    _seen_within(server, "yml", "y1", limit=2.0)
    assert sorted(server.jobs()) == ["lat", "nested", "yml"]
    assert server.status()["revision"] != status["revision"]


def test_sighup_reconciles_without_watching(serve: ServeFactory, project: Path) -> None:
    target = write(
        project / "schedules" / "jobs.yaml",
        JOB.format(job_id="hup", arg="h1")
        + JOB.format(job_id="same", arg="s").replace("jobs:\n", "")
        + JOB.format(job_id="gone", arg="g").replace("jobs:\n", ""),
    )
    server = serve(no_watch=True)
    assert sorted(server.jobs()) == ["gone", "hup", "same"]
    write(
        target,
        JOB.format(job_id="hup", arg="h2")
        + JOB.format(job_id="same", arg="s").replace("jobs:\n", "")
        + JOB.format(job_id="new", arg="n").replace("jobs:\n", ""),
    )
    _holds(lambda: _args(server, "hup") == ["h1"], 0.6, "--no-watch applied an edit by itself")
    server.send(signal.SIGHUP)
    _seen_within(server, "hup", "h2", limit=2.0)
    assert sorted(server.jobs()) == ["hup", "new", "same"]
    status = server.status()
    report = status["last_reconcile"]
    counts = {k: report[k] for k in ("added", "updated", "removed", "unchanged")}
    assert counts == {"added": 1, "updated": 1, "removed": 1, "unchanged": 1}, report
    assert server.running

    # SIGHUP with nothing changed still reconciles, and changes nothing: last_reconcile
    # stays the last one that changed something.
    jobs = server.jobs()
    count = server.reconciles()
    server.send(signal.SIGHUP)
    after = server.wait_reconcile(count)
    assert after["revision"] == status["revision"]
    assert after["last_reconcile"] == report
    assert server.jobs() == jobs


def test_periodic_resync_without_watching(serve: ServeFactory, project: Path) -> None:
    target = write(project / "schedules" / "jobs.yaml", JOB.format(job_id="rs", arg="r1"))
    server = serve(no_watch=True, env={"ENGINE_RESYNC_INTERVAL": "0.5"})
    write(target, JOB.format(job_id="rs", arg="r2"))
    _seen_within(server, "rs", "r2", limit=3.0)
    os.remove(target)
    wait_for(lambda: server.get("/jobs")["count"] == 0, timeout=3.0, what="the job removed")


def test_symlinked_folder_present_at_start_is_watched(
    serve: ServeFactory, project: Path, tmp_path: Path
) -> None:
    shared = write(tmp_path / "shared" / "s.yaml", JOB.format(job_id="shared", arg="s1"))
    (project / "schedules" / "shared").symlink_to(shared.parent, target_is_directory=True)
    server = serve()
    assert _args(server, "shared") == ["s1"]
    write(shared, JOB.format(job_id="shared", arg="s2"))
    _seen_within(server, "shared", "s2", limit=2.0)


def test_symlinked_folder_added_later_is_watched(
    serve: ServeFactory, project: Path, tmp_path: Path
) -> None:
    server = serve()
    shared = write(tmp_path / "shared" / "s.yaml", JOB.format(job_id="shared", arg="s1"))
    (project / "schedules" / "shared").symlink_to(shared.parent, target_is_directory=True)
    _seen_within(server, "shared", "s1", limit=2.0)
    write(shared, JOB.format(job_id="shared", arg="s2"))
    _seen_within(server, "shared", "s2", limit=1.0)
