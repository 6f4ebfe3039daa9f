"""deploy/: the Kubernetes manifests and the compose file validate offline against their schemas
(kubernetes-validate and check-jsonschema ship them), and the probes ask the right questions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from server.health import LIVENESS

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
# 1.27: native gRPC probes are GA; the newest schema kubernetes-validate ships.
KUBERNETES_VERSIONS = ["1.27.0", kubernetes_validate.utils.latest_version()]


def documents() -> list[dict]:
    return [
        doc
        for manifest in MANIFESTS
        for doc in yaml.safe_load_all(manifest.read_text())
        if doc is not None
    ]


def of_kind(kind: str) -> list[dict]:
    return [doc for doc in documents() if doc["kind"] == kind]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_validate_strictly(version):
    assert MANIFESTS
    for doc in documents():
        kubernetes_validate.validate(doc, version, strict=True)


def test_probes_liveness_on_liveness_readiness_and_startup_on_the_server():
    (deployment,) = of_kind("Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["livenessProbe"]["grpc"]["service"] == LIVENESS
    assert container["readinessProbe"]["grpc"]["service"] == ""
    assert container["startupProbe"]["grpc"]["service"] == ""


def test_disruption_budget_spread_and_memory():
    (deployment,) = of_kind("Deployment")
    (budget,) = of_kind("PodDisruptionBudget")
    pod = deployment["spec"]["template"]
    assert budget["spec"]["selector"] == deployment["spec"]["selector"]
    keys = {c["topologyKey"] for c in pod["spec"]["topologySpreadConstraints"]}
    assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    (container,) = pod["spec"]["containers"]
    resources = container["resources"]
    # BENCHMARKS.md: 364 MB peak per process (8 concurrent 1,000-article batches).
    assert _mib(resources["requests"]["memory"]) * 2**20 >= 364e6
    assert _mib(resources["limits"]["memory"]) >= 1.3 * _mib(resources["requests"]["memory"])


def test_the_migration_job_has_time_for_the_slowest_migration():
    (job,) = of_kind("Job")
    # 0007 rewrites articles at about a minute per 100k: ~10 minutes at 1M.
    assert job["spec"]["activeDeadlineSeconds"] >= 20 * 60


def test_compose_file_validates_against_the_compose_spec():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(DEPLOY / "docker-compose.yml"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_health_is_readiness():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    test = compose["services"]["blogstore"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "blogstore", "healthcheck"]
    assert test[test.index("--service") + 1] == ""


def _mib(quantity: str) -> float:
    units = {"Mi": 1, "Gi": 1024}
    return float(quantity[:-2]) * units[quantity[-2:]]
