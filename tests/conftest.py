"""Shared fixtures."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

MakePackage = Callable[[str, dict[str, str]], Path]


@pytest.fixture
def make_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MakePackage]:
    """Create an importable package under ``tmp_path``: ``make_package("tasks", {"jobs": src})``.

    The folder is put first on ``sys.path`` and any module of that name already imported is
    hidden for the test, so each test imports its own code; everything is restored after.
    """
    root = tmp_path / "importable"
    names: list[str] = []

    def make(name: str, modules: dict[str, str]) -> Path:
        package = root / name
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").touch()
        for module, source in modules.items():
            (package / f"{module}.py").write_text(textwrap.dedent(source))
        for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            monkeypatch.delitem(sys.modules, loaded)
        names.append(name)
        monkeypatch.syspath_prepend(str(root))
        return package

    yield make
    for name in names:
        for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[loaded]


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database on the local server, dropped after the test."""
    import uuid

    psycopg = pytest.importorskip("psycopg")
    name = f"schedctl_test_{uuid.uuid4().hex[:12]}"
    admin = "postgresql://postgres@127.0.0.1:5432/postgres"
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:  # pragma: no cover - CI starts the server
        pytest.fail(f"PostgreSQL is not reachable on 127.0.0.1:5432: {exc}")
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The state database, once on embedded SQLite and once on the local PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    return str(request.getfixturevalue("postgres_url"))
