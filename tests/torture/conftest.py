"""Torture-suite fixtures: worlds with their databases, and which suite runs.

``TORTURE`` picks the suite: ``short`` (default: the few-minute version inside
``make test``), ``full`` (``make torture``), ``proof`` (the claim switched off, which
must be caught), or ``off``. Tests of the other suites are deselected, not skipped.
Every table is written to ``.torture/`` (or ``TORTURE_RESULTS``) and printed at the end;
each scenario's project, task log and replica logs stay in ``.torture/work/``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.torture.harness import World
from tests.torture.project import JobPlan
from tests.torture.proxy import PgProxy

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
SUITES = {"short": "torture_short", "full": "torture_full", "proof": "torture_proof"}
_SESSION_START = time.time()

MakeWorld = Callable[..., World]


def suite() -> str:
    return os.environ.get("TORTURE", "short")


def results_dir(config: pytest.Config) -> Path:
    return Path(os.environ.get("TORTURE_RESULTS", config.rootpath / ".torture"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wanted = SUITES.get(suite())
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        marks = {m for m in SUITES.values() if item.get_closest_marker(m)}
        (drop if marks and wanted not in marks else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    folder = results_dir(terminalreporter.config)
    if not folder.is_dir():
        return
    tables = sorted(p for p in folder.glob("*.txt") if p.stat().st_mtime >= _SESSION_START)
    if tables:
        terminalreporter.section("torture tables")
        for path in tables:
            terminalreporter.write_line(path.read_text().rstrip())
            terminalreporter.write_line("")


def _admin() -> object:
    psycopg = pytest.importorskip("psycopg")
    try:
        return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is not reachable on 127.0.0.1:5432: {exc}")
        pytest.skip(
            "PostgreSQL is not running on 127.0.0.1:5432 (start it: service postgresql start)"
        )


@pytest.fixture
def make_world(request: pytest.FixtureRequest) -> Iterator[MakeWorld]:
    """``make_world(name, jobs, database="sqlite"|"postgres", proxy=False, **world_kwargs)``.

    A PostgreSQL world gets its own database (dropped after, WITH (FORCE): ours only);
    ``proxy=True`` puts a ``PgProxy`` between its replicas and the server
    (``world.proxy``). Teardown thaws and kills every process the world started.
    """
    worlds: list[World] = []
    proxies: list[PgProxy] = []
    databases: list[str] = []

    def make(
        name: str,
        jobs: tuple[JobPlan, ...],
        database: str = "sqlite",
        proxy: bool = False,
        **kwargs: object,
    ) -> World:
        # Kept under the results folder (replaced by the next run of the same scenario), so
        # the task log, the replicas' logs and the SQLite file outlive pytest's tmp_path.
        callspec = getattr(request.node, "callspec", None)
        workdir = (
            results_dir(request.config) / "work" / f"{name}-{callspec.id if callspec else suite()}"
        )
        if workdir.exists():
            shutil.rmtree(workdir)
        workdir.mkdir(parents=True)
        if database == "sqlite":
            url = None  # the default, sqlite:///.engine/state.db in the project folder
            read_url = f"sqlite:///{workdir / 'project' / '.engine' / 'state.db'}"
        else:
            db_name = f"schedctl_torture_{uuid.uuid4().hex[:12]}"
            with _admin() as conn:  # type: ignore[attr-defined]
                conn.execute(f'CREATE DATABASE "{db_name}"')
            databases.append(db_name)
            read_url = f"postgresql://postgres@127.0.0.1:5432/{db_name}"
            url = read_url
            if proxy:
                gate = PgProxy().start()
                proxies.append(gate)
                url = gate.url(db_name)
        world = World(name, workdir, jobs, database_url=url, read_url=read_url, **kwargs)  # type: ignore[arg-type]
        world.proxy = proxies[-1] if proxy else None
        worlds.append(world)
        return world

    try:
        yield make
    finally:
        for world in worlds:
            world.close()
        for gate in proxies:
            gate.close()
        if databases:
            with _admin() as conn:  # type: ignore[attr-defined]
                for db_name in databases:
                    with contextlib.suppress(Exception):
                        conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')


@pytest.fixture
def results(request: pytest.FixtureRequest) -> Path:
    return results_dir(request.config)
