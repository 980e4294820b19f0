"""What ships under ``deploy/``: the Prometheus alert rules and the Kubernetes example.

The alert rules are checked and unit-tested by ``promtool`` (Debian's ``prometheus`` package),
and cross-checked against the metrics the engine exports. The Kubernetes manifests are parsed,
validated against the Kubernetes JSON schemas (``kubernetes-validate``, offline), and read as a
user would rely on them: the probes, the schedules mount, the Host check, the database.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version
from prometheus_client.parser import text_string_to_metric_families

from engine.settings import Settings
from tests.conftest import MakePackage
from tests.harness import engine_settings, eventually, running

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
KUBERNETES = DEPLOY / "kubernetes"

# The metrics of CONTRACT section 9 that alert rules may use.
CONTRACT_METRICS = {
    "schedctl_runs_total",
    "schedctl_job_last_success_timestamp_seconds",
    "schedctl_job_last_run_timestamp_seconds",
    "schedctl_job_next_run_timestamp_seconds",
    "schedctl_job_consecutive_failures",
    "schedctl_job_stale",
    "schedctl_reconcile_errors",
    "schedctl_pending_removal_jobs",
    "schedctl_loop_lag_seconds",
    "schedctl_leader",
    "schedctl_database_up",
}
# Oldest Kubernetes the example claims to work on, and the newest schemas the package bundles.
KUBERNETES_VERSIONS = ("1.25", latest_version())


# -- helpers ------------------------------------------------------------------------------


def promtool() -> str:
    """The promtool binary; a skip with how to install it, or a failure under CI=true."""
    found = shutil.which("promtool")
    if found is None:
        reason = "promtool not found: apt-get install prometheus"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120
    )


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yaml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def rule_metrics() -> set[str]:
    """The schedctl metric names alerts.yaml reads, in expressions and annotation queries."""
    return set(re.findall(r"\bschedctl_[a-z_]+\b", (PROMETHEUS / "alerts.yaml").read_text()))


def manifests() -> list[dict[str, Any]]:
    """Every Kubernetes object of the example (the Kustomization is not one)."""
    return [
        doc
        for path in sorted(KUBERNETES.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc is not None and doc["kind"] != "Kustomization"
    ]


def one(kind: str) -> dict[str, Any]:
    found = [doc for doc in manifests() if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind} under deploy/kubernetes, found {len(found)}"
    return found[0]


def container() -> dict[str, Any]:
    containers = one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]  # type: ignore[no-any-return]


def flag(args: list[str], name: str) -> str:
    assert name in args, f"{name} missing from the container's args {args}"
    return args[args.index(name) + 1]


def container_port(port: int | str) -> int:
    """A probe's or Service's port, by number or by the container port's name."""
    for declared in container()["ports"]:
        if port in (declared["containerPort"], declared.get("name")):
            return int(declared["containerPort"])
    raise AssertionError(f"port {port!r} is not a port of the container")


def env() -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container()["env"]}


# -- every file -----------------------------------------------------------------------------


def test_every_yaml_document_under_deploy_parses() -> None:
    paths = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])
    assert paths
    for path in paths:
        documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
        assert documents, f"{path} holds no YAML document"
        assert all(isinstance(doc, dict) for doc in documents), path


# -- Prometheus alert rules -----------------------------------------------------------------


def test_alert_rules_pass_promtool_check() -> None:
    result = run_promtool("check", "rules", "alerts.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_pass_their_promtool_unit_tests() -> None:
    result = run_promtool("test", "rules", "alerts_test.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_tested_both_firing_and_quiet() -> None:
    # promtool passes a test of a misspelt alert name that expects no alert: name them all here.
    names = {rule["alert"] for rule in alert_rules()}
    cases = yaml.safe_load((PROMETHEUS / "alerts_test.yaml").read_text())["tests"]
    checks = [check for case in cases for check in case.get("alert_rule_test", [])]
    tested = {check["alertname"] for check in checks}
    assert tested - names == set(), "tests name alerts that alerts.yaml does not define"
    firing = {check["alertname"] for check in checks if check["exp_alerts"]}
    quiet = {check["alertname"] for check in checks if not check["exp_alerts"]}
    assert names - firing == set(), "alerts never shown firing"
    assert names - quiet == set(), "alerts never shown staying quiet"


def test_every_alert_has_a_severity_a_summary_and_what_to_do() -> None:
    runbook = re.compile(r"`schedctl [a-z]+|`/status`|`/healthz`|`/readyz`")
    for rule in alert_rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        annotations = rule["annotations"]
        assert annotations["summary"].strip(), name
        assert runbook.search(annotations["description"]), f"{name} says nothing to do"
        if name.startswith("SchedctlJob"):
            for key in ("summary", "description"):
                assert "$labels.job_id" in annotations[key], f"{name} {key} names no job"


def test_alert_rules_use_only_the_metrics_of_the_contract() -> None:
    # A rule over a misspelt metric never fires, and a unit test with the same typo passes.
    used = rule_metrics()
    assert used, "no schedctl metric in alerts.yaml"
    assert used - CONTRACT_METRICS == set()


TASK_SOURCE = """
def ok():
    return "done"


def fail():
    raise ValueError("the report server said no")
"""


@pytest.fixture
def metrics_settings(tmp_path: Path, make_package: MakePackage) -> Iterator[Settings]:
    make_package("dp_tasks", {"jobs": TASK_SOURCE})
    settings = engine_settings(tmp_path, "dp_tasks", shutdown_grace=0.5)
    (settings.schedules_dir / "jobs.yaml").write_text(
        textwrap.dedent(
            """
            jobs:
              good:
                task: dp_tasks.jobs:ok
                cron: "0 3 * * *"
              bad:
                task: dp_tasks.jobs:fail
                cron: "0 3 * * *"
            """
        )
    )
    yield settings


async def test_the_engine_exports_every_metric_the_rules_use(metrics_settings: Settings) -> None:
    async with running(metrics_settings) as engine:
        for job_id in ("good", "bad"):
            assert await engine.scheduler.run_job(job_id) is True

        async def finished_both() -> bool:
            jobs = {job_id: await engine.job(job_id) for job_id in ("good", "bad")}
            return all(job["last_run"] is not None for job in jobs.values())

        await eventually(finished_both, within=10, what="both jobs ran once")
        response = await engine.client.get("/metrics")
    assert response.status_code == 200
    samples = [s for f in text_string_to_metric_families(response.text) for s in f.samples]
    exported = {sample.name for sample in samples}
    assert rule_metrics() - exported == set(), "metrics the rules use but the engine lacks"
    for sample in samples:
        if sample.name.startswith("schedctl_job_") or sample.name == "schedctl_runs_total":
            assert "job_id" in sample.labels and "job" not in sample.labels, sample


# -- Kubernetes manifests -------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_is_valid_against_the_kubernetes_schema(version: str) -> None:
    documents = manifests()
    assert {doc["kind"] for doc in documents} >= {"Deployment", "ConfigMap", "Service"}
    for doc in documents:
        # strict: an unknown field (a typo such as `livenessprobe`) is an error, not ignored.
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    files = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_probes_ask_healthz_and_readyz_on_the_port_the_engine_serves() -> None:
    served = int(flag(container()["args"], "--port"))
    assert flag(container()["args"], "--host") == "0.0.0.0"
    probes = {
        "livenessProbe": "/healthz",
        "startupProbe": "/healthz",
        "readinessProbe": "/readyz",
    }
    for probe, path in probes.items():
        get = container()[probe]["httpGet"]
        assert get["path"] == path, probe
        assert container_port(get["port"]) == served, probe
        # The kubelet's default Host is the pod IP; the engine always accepts localhost.
        assert {"name": "Host", "value": "localhost"} in get["httpHeaders"], probe


def test_the_schedules_configmap_is_mounted_where_schedules_points() -> None:
    schedules = flag(container()["args"], "--schedules")
    mounts = [m for m in container()["volumeMounts"] if m["mountPath"] == schedules]
    assert len(mounts) == 1, f"nothing mounted at --schedules {schedules}"
    # A subPath mount never sees ConfigMap updates.
    assert "subPath" not in mounts[0]
    volumes = {v["name"]: v for v in one("Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes[mounts[0]["name"]]["configMap"]["name"] == one("ConfigMap")["metadata"]["name"]


def test_the_configmap_schedule_files_are_valid(tmp_path: Path) -> None:
    data = one("ConfigMap")["data"]
    assert any(key.endswith((".yaml", ".yml")) for key in data)
    for key, text in data.items():
        (tmp_path / key).write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "engine", "validate", str(tmp_path)],
        cwd=REPO,  # tasks.* resolve from here, as they do from /app in the image
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_service_and_the_budget_select_the_deployments_pods() -> None:
    pods = one("Deployment")["spec"]["template"]["metadata"]["labels"]
    service = one("Service")["spec"]
    assert service["selector"].items() <= pods.items()
    for port in service["ports"]:
        assert container_port(port["targetPort"]) == int(flag(container()["args"], "--port"))
    budget = one("PodDisruptionBudget")["spec"]
    assert budget["selector"]["matchLabels"].items() <= pods.items()
    assert budget["minAvailable"] < one("Deployment")["spec"]["replicas"]


def test_allowed_hosts_name_the_service_and_the_pod_ip() -> None:
    variables = env()
    allowed = variables["ENGINE_ALLOWED_HOSTS"]["value"].split(",")
    service = one("Service")["metadata"]["name"]
    assert service in allowed
    assert f"{service}.$(POD_NAMESPACE).svc" in allowed
    assert "$(POD_IP)" in allowed  # Prometheus scrapes pod-ip:port
    # Kubernetes expands $(NAME) only for a variable defined earlier in the list; any other
    # reference stays literal and the engine would allow a host named "$(POD_IP)".
    defined: list[str] = []
    for item in container()["env"]:
        for name in re.findall(r"\$\((\w+)\)", item.get("value", "")):
            assert name in defined, f"{item['name']} uses $({name}) before it is defined"
        defined.append(item["name"])


def test_several_replicas_share_one_postgres_database() -> None:
    # Each replica on its own SQLite file would lead on its own and fire every job again.
    assert one("Deployment")["spec"]["replicas"] >= 2
    database = env()["ENGINE_DATABASE_URL"]
    assert database["valueFrom"]["secretKeyRef"]["key"]
    # And nothing writable where the SQLite fallback would go, so a missing URL fails to start.
    workdir = Path("/app")
    writable = {Path(m["mountPath"]) for m in container()["volumeMounts"] if not m.get("readOnly")}
    assert not any(path == workdir or workdir in path.parents for path in writable), writable


def test_the_pod_runs_as_non_root_on_a_read_only_root() -> None:
    pod = one("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    security = container()["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert "memory" in container()["resources"]["limits"]
    assert set(container()["resources"]["requests"]) == {"cpu", "memory"}


def test_the_grace_period_outlasts_the_engines_drain() -> None:
    grace = one("Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    # The engine drains for shutdown_grace, and uvicorn allows 5 s more to stop.
    assert grace > Settings().shutdown_grace + 5


def test_prometheus_scrapes_the_pods_metrics_port() -> None:
    annotations = one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == int(flag(container()["args"], "--port"))


def test_the_dockerfile_copies_what_exists_and_runs_as_the_pods_user() -> None:
    lines = (DEPLOY / "Dockerfile").read_text().splitlines()
    copies = [line.split()[1:-1] for line in lines if line.startswith("COPY ")]
    assert copies
    for sources in copies:
        for source in sources:
            assert (REPO / source).exists(), f"Dockerfile copies {source}, missing from the repo"
    user = next(line.split()[1] for line in lines if line.startswith("USER "))
    pod = one("Deployment")["spec"]["template"]["spec"]["securityContext"]
    assert user == f"{pod['runAsUser']}:{pod['runAsGroup']}"
    assert "WORKDIR /app" in lines  # where the test above keeps writable mounts away from
