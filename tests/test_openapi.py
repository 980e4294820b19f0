"""The status API's published OpenAPI description, and property-based HTTP tests over a
running engine: every answer conforms to it, and no request of any shape gets a 5xx.

The engine runs in-process (its lifespan on the test's event loop); Hypothesis drives the
requests from a worker thread, each sent to the app on that same loop, so the engine keeps
running between requests as it would behind uvicorn.
"""

from __future__ import annotations

import asyncio
import importlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from engine.app import create_app
from tests.conftest import MakePackage
from tests.harness import JOB_FIELDS, RUN_FIELDS, Running, engine_settings, eventually, serving

TASKS = "oa_tasks"
SOURCE = """
def ping(*args, **kwargs):
    return None


def boom(*args, **kwargs):
    raise RuntimeError("boom with " + str(kwargs.get("password")))
"""
SCHEDULES = """
jobs:
  nightly:
    task: oa_tasks.jobs:ping
    cron: "0 2 * * *"
    args: ["postgresql://app:hunter2@db/prod", 3]
    kwargs: {password: hunter2, nested: {token: t-1, list: [1, 2.5, null, true]}}
    labels: {team: data, auth_token: label-secret}
    description: "The nightly job"
  every-hour:
    task: oa_tasks.jobs:boom
    interval: 1h
    timezone: Europe/Berlin
    kwargs: {password: hunter2}
  launch:
    task: oa_tasks.jobs:ping
    at: 2031-01-01T09:00:00
    paused: true
"""
BROKEN = "jobs:\n  broken: {task: oa_tasks.jobs:ping, crn: x}\n"
KNOWN_IDS = ("nightly", "every-hour", "launch", "runtime-one")
EXAMPLES = int(os.environ.get("SCHEDCTL_HTTP_EXAMPLES", "60"))  # `make fuzz` raises it


@pytest.fixture
async def engine(tmp_path: Path, make_package: MakePackage) -> AsyncIterator[Running]:
    """A running engine with declared, paused, runtime and failed jobs and a broken file."""
    make_package(TASKS, {"jobs": SOURCE})
    configured = engine_settings(tmp_path, TASKS, shutdown_grace=1)
    (configured.schedules_dir / "jobs.yaml").write_text(SCHEDULES)
    (configured.schedules_dir / "broken.yaml").write_text(BROKEN)
    async with serving(create_app(configured)) as running:
        tasks = importlib.import_module(f"{TASKS}.jobs")
        await running.scheduler.add_interval_job(
            tasks.ping, "runtime-one", minutes=5, kwargs={"api_key": "k-1"}
        )
        for job_id in ("nightly", "every-hour"):
            assert await running.scheduler.run_job(job_id) is True
        await eventually(
            running.until_runs("every-hour", lambda runs: runs and runs[0]["status"] == "failed"),
            what="a failed run",
        )
        yield running


def _sender(running: Running) -> Callable[..., httpx.Response]:
    """A blocking ``send(method, url, **kw)`` for worker threads, served on the engine's loop."""
    loop = asyncio.get_running_loop()

    def send(method: str, url: str, **kwargs: Any) -> httpx.Response:
        request = running.client.request(method, url, **kwargs)
        return asyncio.run_coroutine_threadsafe(request, loop).result(timeout=30)

    return send


# -- the description ------------------------------------------------------------------------


def test_every_route_is_described_with_the_contracts_fields(tmp_path: Path) -> None:
    schema = create_app(engine_settings(tmp_path, TASKS, shutdown_grace=1)).openapi()
    assert set(schema["paths"]) == {
        "/healthz",
        "/readyz",
        "/jobs",
        "/jobs/{job_id}",
        "/jobs/{job_id}/explain",
        "/status",
        "/events",
        "/specs",
        "/metrics",
    }
    assert all(set(item) == {"get"} for item in schema["paths"].values())  # HEAD is implied
    models = schema["components"]["schemas"]
    job = set(models["Job"]["properties"])
    assert job >= JOB_FIELDS | {"executor", "last_success_at", "stale"}
    assert set(models["Trigger"]["properties"]) == {"type", "expression", "timezone", "description"}
    assert set(models["Run"]["properties"]) == RUN_FIELDS | {"traceback", "logs", "worker"}
    assert set(models["JobDetail"]["properties"]) == job | {"runs"}
    assert set(models["Status"]["properties"]) >= {
        "revision",
        "commit",
        "role",
        "scheduler",
        "database",
        "jobs",
        "pending_removal",
        "last_reconcile",
        "version",
    }
    assert set(models["LastReconcile"]["properties"]) == {
        "at",
        "reason",
        "duration_ms",
        "added",
        "updated",
        "removed",
        "unchanged",
        "errors",
    }
    assert set(models["Problem"]["properties"]) == {"file", "line", "column", "message"}
    responses = schema["paths"]["/jobs/{job_id}"]["get"]["responses"]
    assert responses["404"]["content"]["application/json"]["schema"]["$ref"].endswith("/Detail")
    assert "400" in schema["paths"]["/jobs"]["get"]["responses"]
    assert "503" in schema["paths"]["/readyz"]["get"]["responses"]


# -- schemathesis: every answer conforms ----------------------------------------------------


async def test_every_answer_conforms_to_the_published_openapi(engine: Running) -> None:
    schema = schemathesis.openapi.from_dict(engine.app.openapi())
    known = st.sampled_from(KNOWN_IDS).flatmap(
        lambda job_id: schema["/jobs/{job_id}"]["GET"].as_strategy(
            path_parameters={"job_id": job_id}
        )
    )
    cases = st.one_of(
        schema.as_strategy(GenerationMode.POSITIVE),
        schema.as_strategy(GenerationMode.NEGATIVE),
        known,
    )
    send = _sender(engine)
    seen: dict[str, set[int]] = {}

    @settings(
        max_examples=2 * EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases)
    def conforms(case: Any) -> None:
        request = case.as_transport_kwargs(base_url="http://localhost")
        response = send(
            request["method"],
            request["url"],
            params=request.get("params"),
            headers=request.get("headers"),
        )
        seen.setdefault(case.operation.label, set()).add(response.status_code)
        case.validate_response(response)

    await asyncio.to_thread(conforms)
    assert set(seen) == {f"GET {path}" for path in engine.app.openapi()["paths"]}
    assert {200, 404} <= seen["GET /jobs/{job_id}"]
    assert 200 in seen["GET /jobs"]  # the 400s of bad filters: test_status_api


# -- no request of any shape gets a 5xx -----------------------------------------------------

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "PROPFIND")
PATHS = ("/", "/healthz", "/readyz", "/jobs", "/jobs/", "/status", "/specs", "/metrics")
PATH_TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="?#"), max_size=60
)
HEADER_NAME = st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,20}", fullmatch=True).filter(
    lambda name: name.lower() not in ("host", "content-length", "transfer-encoding")
)
HEADER_VALUE = st.binary(max_size=80).map(lambda raw: raw.replace(b"\r", b"").replace(b"\n", b""))


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, list[tuple[str, str]], dict[str, bytes]]:
    method = draw(st.sampled_from(METHODS))
    path = draw(
        st.one_of(
            st.sampled_from(PATHS),
            PATH_TEXT.map(lambda text: f"/jobs/{text}"),
            PATH_TEXT.map(lambda text: f"/jobs/{text}/explain"),
            PATH_TEXT.map(lambda text: f"/{text}"),
            st.sampled_from(KNOWN_IDS).map(lambda job_id: f"/jobs/{job_id}"),
        )
    )
    query = draw(
        st.lists(
            st.tuples(
                st.sampled_from(("source", "label", "status", "file", "at", "limit", "x"))
                | st.text(max_size=10),
                st.text(max_size=40),
            ),
            max_size=6,
        )
    )
    headers = draw(st.dictionaries(HEADER_NAME, HEADER_VALUE, max_size=4))
    return method, path, query, headers


async def test_no_request_of_any_shape_gets_a_server_error(engine: Running) -> None:
    send = _sender(engine)
    answers: list[int] = []

    @settings(max_examples=EXAMPLES, deadline=None, database=None)
    @given(request=requests())
    def never_a_5xx(request: tuple[str, str, list[tuple[str, str]], dict[str, bytes]]) -> None:
        method, path, query, headers = request
        url = httpx.URL("http://localhost").copy_with(raw_path=quote(path).encode())
        response = send(method, url, params=query, headers=headers)
        answers.append(response.status_code)
        assert response.status_code < 500, (request, response.status_code, response.text)
        if method not in ("GET", "HEAD") and response.status_code not in (400, 404):
            # Starlette first redirects /jobs/ to /jobs, which then answers 405; the status
            # page's own paths ("/", "/ui/jobs/{id}") answer 405 at once.
            assert response.status_code in ((307, 405) if path.endswith("/") else (405,))

    await asyncio.to_thread(never_a_5xx)
    assert {200, 404, 405} <= set(answers)


@pytest.mark.parametrize(
    ("method", "target", "headers", "status"),
    [
        ("HEAD", "/jobs", {}, 200),
        ("HEAD", "/jobs/nightly", {}, 200),
        ("HEAD", "/jobs/nope", {}, 404),
        ("OPTIONS", "/jobs", {}, 405),
        ("OPTIONS", "/jobs/nightly", {"Origin": "http://evil.example"}, 405),
        ("POST", "/jobs/nightly", {"Content-Type": "application/json"}, 405),
        ("DELETE", "/status", {}, 405),
        ("GET", "/jobs/%F0%9F%92%A3%00%E2%80%AE..%2F..", {}, 404),
        ("GET", "/jobs/" + "x" * 20_000, {}, 404),
        ("GET", "/jobs?" + "label=a%3Db&" * 2_000, {}, 200),
        ("GET", "/jobs?status=" + "%FF" * 3_000, {}, 400),
        ("GET", "/jobs?source=%00", {}, 400),
        ("GET", "/jobs?file=%ED%A0%80", {}, 200),
        ("GET", "/jobs/nightly?at=not-a-time", {}, 200),
        ("GET", "/status", {"If-None-Match": '"' + "x" * 5_000 + '"'}, 200),
        ("GET", "/specs", {"Accept": "application/xml"}, 200),
        ("GET", "/metrics", {"Accept-Encoding": "gzip, br, zstd"}, 200),
    ],
)
async def test_odd_requests_get_a_clear_answer(
    engine: Running, method: str, target: str, headers: dict[str, str], status: int
) -> None:
    url = httpx.URL("http://localhost").copy_with(raw_path=target.encode())
    response = await engine.client.request(method, url, headers=headers)
    assert response.status_code == status, response.text[:300]
    if status >= 400 and method != "HEAD":
        assert isinstance(response.json()["detail"], str)
    if status == 405:
        assert "GET" in response.headers["allow"]
