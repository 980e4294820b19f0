"""Settings (contract section 6): every ``ENGINE_*`` variable and flag is checked when it
is read; a bad one names the setting and says what to write, and ``schedctl serve`` exits
2 with that one line. A setting is never blamed on a schedule file.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from engine.errors import SchedctlError, SettingsError
from engine.settings import DEFAULT_URL, Settings, url_from_env
from engine.surfaces.cli import main

# (variable, bad value, a fragment of what the message says to write or what is wrong)
BAD_VARIABLES = [
    ("ENGINE_TIMEZONE", "Mars/Base", "write an IANA name such as 'UTC'"),
    ("ENGINE_TIMEZONE", "europe/berlin", "did you mean 'Europe/Berlin'?"),
    ("ENGINE_TIMEZONE", "../../etc/passwd", "unknown timezone"),
    ("ENGINE_PORT", "abc", "write an integer from 1 to 65535"),
    ("ENGINE_PORT", "70000", "write an integer from 1 to 65535"),
    ("ENGINE_PORT", "0", "write an integer from 1 to 65535"),
    ("ENGINE_PORT", "8_000", "write an integer from 1 to 65535"),
    ("ENGINE_EXTENSIONS", '{"ext": ', "not valid JSON"),
    ("ENGINE_EXTENSIONS", "[1, 2]", "a JSON object mapping each module"),
    ("ENGINE_EXTENSIONS", '{"ext": 3}', "the config of 'ext' must be an object"),
    ("ENGINE_EXTENSIONS", "no_such_extension_module", "no extension module named"),
    ("ENGINE_EXTENSIONS", '{"no_such.ext": {}}', "no extension module named 'no_such.ext'"),
    ("ENGINE_EXTENSIONS", "bad name", "not a module name"),
    ("ENGINE_EXTENSIONS", "[" * 100_000, "not a JSON object schedctl can read"),
    ("ENGINE_DATABASE_URL", "not a url", "is not a database URL"),
    ("ENGINE_DATABASE_URL", "", "is not a database URL"),
    ("ENGINE_DATABASE_URL", "postgresql://u:p@h:port/db", "is not a database URL"),
    ("ENGINE_DATABASE_URL", "mysql://u@h/db", "unsupported database 'mysql'"),
    ("ENGINE_DATABASE_URL", "postgresql+asyncpg://h/db", "unsupported PostgreSQL driver"),
    ("ENGINE_TASK_MODULES", "tasks,1jobs", "'1jobs' is not a module name"),
    ("ENGINE_TASK_MODULES", "tasks/jobs", "is not a module name"),
    ("ENGINE_TASK_MODULES", " , ", "no module is named"),
    ("ENGINE_TASK_MODULES", "os", "standard library"),
    ("ENGINE_SCHEDULES_DIR", "  ", "the value is empty"),
    ("ENGINE_HOST", "", "not an address to bind"),
    ("ENGINE_RESYNC_INTERVAL", "fast", "not a duration"),
    ("ENGINE_RESYNC_INTERVAL", "0", "too short"),
    ("ENGINE_RESYNC_INTERVAL", "-5", "not a duration"),
    ("ENGINE_RESYNC_INTERVAL", "1e999", "not a duration"),
    ("ENGINE_SHUTDOWN_GRACE", "soon", "not a duration"),
    ("ENGINE_HISTORY_LIMIT", "0", "an integer of at least 1"),
    ("ENGINE_THREAD_POOL_SIZE", "many", "an integer of at least 1"),
    ("ENGINE_LOG_LEVEL", "verbose", "DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    ("ENGINE_LOG_FORMAT", "xml", "text, json"),
    ("ENGINE_MASS_REMOVAL_DELAY", "1 minute", "'30s', '5m'"),
    ("ENGINE_STALL_AFTER", "0", "too short"),
    ("ENGINE_CELERY_APP", "tasks.celery", "write 'module:attribute'"),
    ("ENGINE_ALLOWED_HOSTS", "https://status.example.com", "without scheme, port or path"),
    ("ENGINE_ALLOWED_HOSTS", "status.example.com:8000", "without scheme, port or path"),
    ("ENGINE_ALLOWED_HOSTS", "bad host", "is not a host name"),
    ("ENGINE_API_DOCS", "maybe", "write 'true' or 'false'"),
    ("ENGINE_URL", "127.0.0.1:8000", "write e.g. 'http://127.0.0.1:8000'"),
    ("ENGINE_URL", "ftp://h", "is not the engine's URL"),
]


@pytest.mark.parametrize(("variable", "value", "says"), BAD_VARIABLES)
def test_a_bad_variable_names_itself_and_says_what_to_write(
    variable: str, value: str, says: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({variable: value})
    assert caught.value.setting == variable
    message = str(caught.value)
    assert message.startswith(f"{variable}: ")
    assert says in message
    assert "\n" not in message
    assert isinstance(caught.value, SchedctlError) and isinstance(caught.value, ValueError)


def test_a_database_password_is_never_echoed_in_an_error() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"ENGINE_DATABASE_URL": "mysql://app:hunter2@db/prod"})
    assert "hunter2" not in str(caught.value)
    assert "mysql://app:***@db/prod" in str(caught.value)


def test_bad_extension_json_is_located_without_echoing_its_config() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"ENGINE_EXTENSIONS": '{"ext": {"token": "hunter2",}}'})
    assert "hunter2" not in str(caught.value)
    assert "line 1, column" in str(caught.value)


def test_a_flag_wins_and_is_named_when_bad() -> None:
    env = {"ENGINE_PORT": "9000", "ENGINE_SCHEDULES_DIR": "from-env"}
    settings = Settings.from_env(env, port="9100", schedules_dir=None)
    assert (settings.port, settings.schedules_dir) == (9100, Path("from-env"))
    with pytest.raises(SettingsError, match=r"^--port: '70000' is not a port"):
        Settings.from_env(env, port="70000")
    with pytest.raises(SettingsError, match=r"^--database: "):
        Settings.from_env(env, database_url="nonsense")


def test_settings_given_in_code_are_checked_and_named_by_field() -> None:
    with pytest.raises(SettingsError, match=r"^timezone: unknown timezone 'Mars/Base'"):
        Settings(timezone="Mars/Base")
    with pytest.raises(SettingsError, match=r"^port: "):
        Settings(port=True)
    with pytest.raises(SettingsError, match=r"^extensions: no extension module"):
        Settings(extensions={"no_such_extension_module": {}})


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.log_level == "INFO"
    assert settings.log_format == "text"
    assert settings.mass_removal_delay == 60
    assert settings.stall_after == 60
    assert settings.celery_app is None
    assert settings.allowed_hosts == ()
    assert settings.api_docs is False
    assert settings.tune_process is False
    assert settings.url == DEFAULT_URL == "http://127.0.0.1:8000"


def test_good_values_are_read_and_normalised() -> None:
    settings = Settings.from_env(
        {
            "ENGINE_TIMEZONE": "Europe/Berlin",
            "ENGINE_PORT": " 8080 ",
            "ENGINE_TASK_MODULES": "tasks, jobs.nightly ,",
            "ENGINE_EXTENSIONS": '{"json": null, "email.utils": {"x": 1}}',
            "ENGINE_RESYNC_INTERVAL": "0.5",
            "ENGINE_LOG_LEVEL": "debug",
            "ENGINE_LOG_FORMAT": "JSON",
            "ENGINE_MASS_REMOVAL_DELAY": "0",
            "ENGINE_STALL_AFTER": "2m",
            "ENGINE_CELERY_APP": "tasks.celery:app",
            "ENGINE_ALLOWED_HOSTS": "Status.Example.com, *.corp.example,[::1],10.0.0.5,",
            "ENGINE_API_DOCS": "yes",
            "ENGINE_URL": "https://schedctl.example.com/",
            "ENGINE_DATABASE_URL": "postgresql://u:p@db:5432/state",
        }
    )
    assert settings.timezone == "Europe/Berlin"
    assert settings.port == 8080
    assert settings.task_modules == ("tasks", "jobs.nightly")
    assert settings.extensions == {"json": {}, "email.utils": {"x": 1}}
    assert settings.resync_interval == 0.5
    assert (settings.log_level, settings.log_format) == ("DEBUG", "json")
    assert (settings.mass_removal_delay, settings.stall_after) == (0, 120)
    assert settings.celery_app == "tasks.celery:app"
    assert settings.allowed_hosts == ("status.example.com", "*.corp.example", "::1", "10.0.0.5")
    assert settings.api_docs is True
    assert settings.url == "https://schedctl.example.com"
    assert Settings.from_env({"ENGINE_EXTENSIONS": "json, email.utils"}).extensions == {
        "json": {},
        "email.utils": {},
    }


def test_the_client_url_comes_from_the_flag_then_engine_url_then_the_default() -> None:
    assert url_from_env(None, {}) == DEFAULT_URL
    assert url_from_env(None, {"ENGINE_URL": "http://h:1/"}) == "http://h:1"
    assert url_from_env("http://flag:2", {"ENGINE_URL": "http://h:1"}) == "http://flag:2"
    with pytest.raises(SettingsError, match=r"^--url: "):
        url_from_env("nope", {})
    with pytest.raises(SettingsError, match=r"^ENGINE_URL: "):
        url_from_env(None, {"ENGINE_URL": "nope"})


# -- schedctl serve: exit 2, one line naming the setting ---------------------------------


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project folder as the current directory, with no ENGINE_* from outside."""
    (tmp_path / "schedules").mkdir()
    (tmp_path / "schedules" / "jobs.yaml").write_text(
        "jobs:\n  nightly:\n    task: tasks.jobs:run\n    cron: '0 2 * * *'\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in [n for n in __import__("os").environ if n.startswith("ENGINE_")]:
        monkeypatch.delenv(name)
    return tmp_path


SERVE_CASES = [
    ({"ENGINE_TIMEZONE": "Mars/Base"}, [], "ENGINE_TIMEZONE"),
    ({"ENGINE_PORT": "abc"}, [], "ENGINE_PORT"),
    ({"ENGINE_PORT": "70000"}, [], "ENGINE_PORT"),
    ({}, ["--port", "abc"], "--port"),
    ({"ENGINE_EXTENSIONS": "{not json"}, [], "ENGINE_EXTENSIONS"),
    ({"ENGINE_EXTENSIONS": "no_such_extension_module"}, [], "ENGINE_EXTENSIONS"),
    ({"ENGINE_DATABASE_URL": "oracle://h/db"}, [], "ENGINE_DATABASE_URL"),
    ({}, ["--database", "garbage"], "--database"),
    ({"ENGINE_TASK_MODULES": "tasks,-x"}, [], "ENGINE_TASK_MODULES"),
    ({"ENGINE_RESYNC_INTERVAL": "often"}, [], "ENGINE_RESYNC_INTERVAL"),
    ({"ENGINE_ALLOWED_HOSTS": "http://x"}, [], "ENGINE_ALLOWED_HOSTS"),
    ({}, ["--host", "no-such-host.invalid"], "ENGINE_HOST/--host"),
]


@pytest.mark.parametrize(("env", "flags", "named"), SERVE_CASES)
def test_serve_exits_2_with_one_line_naming_a_bad_setting(
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    flags: list[str],
    named: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["serve", *flags]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"error: {named}: ")
    assert err.count("\n") == 1, err
    assert "jobs.yaml" not in err and "schedules" not in err


def test_serve_exits_2_naming_the_port_when_it_is_taken(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ENGINE_PORT/--port: cannot listen on 127.0.0.1:")
    assert err.count("\n") == 1


@pytest.mark.parametrize("command", [["validate"], ["plan"], ["jobs"]])
def test_other_commands_exit_1_on_a_bad_setting(
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
) -> None:
    monkeypatch.setenv("ENGINE_TIMEZONE", "Mars/Base")
    monkeypatch.setenv("ENGINE_URL", "not a url")
    assert main(command) == 1  # plan's 2 means "changes"
    err = capsys.readouterr().err
    assert err.startswith(("error: ENGINE_TIMEZONE: ", "error: ENGINE_URL: "))
