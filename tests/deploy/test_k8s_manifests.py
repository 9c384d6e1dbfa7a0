"""The Kubernetes manifests render and validate, and the validator catches what it claims to.

Each broken case copies deploy/k8s to a scratch directory, breaks one thing the way a hurried
edit would, and runs scripts/k8s_validate.py on the copy: it must exit non-zero and say where
the problem is.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "k8s_validate.py"
K8S = ROOT / "deploy" / "k8s"


def run_validator(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture
def k8s_copy(tmp_path: Path) -> Path:
    target = tmp_path / "k8s"
    shutil.copytree(K8S, target)
    return target


def add_patch(overlay: Path, target: dict[str, str], operations: list[dict[str, object]]) -> None:
    """Append a JSON patch to an overlay's kustomization, as a later edit would."""
    path = overlay / "kustomization.yaml"
    kustomization = yaml.safe_load(path.read_text())
    kustomization.setdefault("patches", []).append({"target": target, "patch": yaml.safe_dump(operations)})
    path.write_text(yaml.safe_dump(kustomization, sort_keys=False))


def test_every_overlay_with_and_without_the_components_validates() -> None:
    result = run_validator()

    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for label in (
        "base",
        "overlays/dev",
        "overlays/prod",
        "overlays/dev +operators",
        "overlays/prod +keda",
        "overlays/prod +keda +operators",
    ):
        assert any(line.startswith(f"ok   {label}:") for line in lines), f"{label} missing from:\n{result.stdout}"
    assert "custom: Cluster, RabbitmqCluster, ScaledObject" in result.stdout


def test_a_wrong_field_type_fails_with_the_resource_and_field_named(k8s_copy: Path) -> None:
    add_patch(
        k8s_copy / "overlays" / "dev",
        {"kind": "Deployment", "name": "bulkmail-query-api"},
        [{"op": "replace", "path": "/spec/template/spec/terminationGracePeriodSeconds", "value": "forty"}],
    )

    result = run_validator("--k8s-dir", str(k8s_copy), "--only", "overlays/dev")

    assert result.returncode == 1
    assert (
        "overlays/dev: Deployment/bulkmail-query-api: spec.template.spec.terminationGracePeriodSeconds: "
        "'forty' is not of type 'integer'"
    ) in result.stderr
    assert "FAIL overlays/dev:" in result.stdout


def test_an_unknown_field_fails_because_validation_is_strict(k8s_copy: Path) -> None:
    add_patch(
        k8s_copy / "overlays" / "prod",
        {"kind": "Deployment", "name": "bulkmail-mailer"},
        [{"op": "add", "path": "/spec/template/spec/containers/0/livenesProbe", "value": {}}],
    )

    result = run_validator("--k8s-dir", str(k8s_copy), "--only", "overlays/prod")

    assert result.returncode == 1
    assert "Deployment/bulkmail-mailer" in result.stderr
    assert "'livenesProbe' was unexpected" in result.stderr


def test_weakening_the_pod_hardening_fails_even_though_the_schema_allows_it(k8s_copy: Path) -> None:
    add_patch(
        k8s_copy / "overlays" / "prod",
        {"kind": "Deployment", "name": "bulkmail-dispatcher"},
        [
            {
                "op": "replace",
                "path": "/spec/template/spec/containers/0/securityContext/readOnlyRootFilesystem",
                "value": False,
            },
            {"op": "remove", "path": "/spec/template/spec/containers/0/resources/limits"},
        ],
    )

    result = run_validator("--k8s-dir", str(k8s_copy), "--only", "overlays/prod")

    assert result.returncode == 1
    assert "Deployment/bulkmail-dispatcher: container dispatcher: readOnlyRootFilesystem must be true" in (
        result.stderr
    )
    assert "resources.limits.memory is not set" in result.stderr


def test_a_typo_in_a_custom_resource_fails_against_its_own_schema(k8s_copy: Path) -> None:
    scaled_object = k8s_copy / "components" / "keda" / "mailer-scaledobject.yaml"
    scaled_object.write_text(scaled_object.read_text().replace("minReplicaCount:", "minReplicas:"))

    result = run_validator("--k8s-dir", str(k8s_copy), "--only", "overlays/dev +keda")

    assert result.returncode == 1
    assert "ScaledObject/bulkmail-mailer: spec: Additional properties are not allowed ('minReplicas'" in (result.stderr)


def test_a_kind_without_any_schema_fails_instead_of_being_skipped(k8s_copy: Path) -> None:
    overlay = k8s_copy / "overlays" / "dev"
    (overlay / "servicemonitor.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "monitoring.coreos.com/v1",
                "kind": "ServiceMonitor",
                "metadata": {"name": "bulkmail"},
                "spec": {"endpoints": [{"port": "http"}]},
            }
        )
    )
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    kustomization["resources"].append("servicemonitor.yaml")
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))

    result = run_validator("--k8s-dir", str(k8s_copy), "--only", "overlays/dev")

    assert result.returncode == 1
    assert "ServiceMonitor/bulkmail: no schema for ServiceMonitor (monitoring.coreos.com/v1)" in result.stderr


def test_a_configmap_reference_kustomize_did_not_rewrite_fails(k8s_copy: Path) -> None:
    add_patch(
        k8s_copy / "overlays" / "dev",
        {"kind": "Deployment", "name": "bulkmail-mailer"},
        [
            {
                "op": "add",
                "path": "/spec/template/spec/containers/0/envFrom/-",
                "value": {"configMapRef": {"name": "bulkmail-mailer-extra"}},
            }
        ],
    )

    result = run_validator("--k8s-dir", str(k8s_copy), "--only", "overlays/dev")

    assert result.returncode == 1
    assert "reads ConfigMap 'bulkmail-mailer-extra', which is neither rendered" in result.stderr


def test_keda_and_the_cpu_autoscaler_together_fail(k8s_copy: Path) -> None:
    component = k8s_copy / "components" / "keda" / "kustomization.yaml"
    kustomization = yaml.safe_load(component.read_text())
    kustomization.pop("patches")  # forget to delete the base's HorizontalPodAutoscaler
    component.write_text(yaml.safe_dump(kustomization, sort_keys=False))

    result = run_validator("--k8s-dir", str(k8s_copy), "--only", "overlays/prod +keda")

    assert result.returncode == 1
    assert "bulkmail-mailer has 2 autoscalers" in result.stderr


def test_an_overlay_that_does_not_render_fails(k8s_copy: Path) -> None:
    (k8s_copy / "overlays" / "prod" / "namespace.yaml").unlink()

    result = run_validator("--k8s-dir", str(k8s_copy), "--only", "overlays/prod")

    assert result.returncode == 1
    assert "overlays/prod: kubectl kustomize failed" in result.stderr
    assert "namespace.yaml" in result.stderr


def test_the_rendered_production_overlay_is_what_operators_expect() -> None:
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(K8S / "overlays" / "prod")], capture_output=True, text=True, check=True
    ).stdout
    resources = {(r["kind"], r["metadata"]["name"]): r for r in yaml.safe_load_all(rendered) if r}

    assert all(r["metadata"].get("namespace", "bulkmail") == "bulkmail" for r in resources.values())
    deployments = {name: r for (kind, name), r in resources.items() if kind == "Deployment"}
    assert set(deployments) == {"bulkmail-query-api", "bulkmail-dispatcher", "bulkmail-mailer"}
    for name, deployment in deployments.items():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["image"].endswith(":0.1.0"), f"{name} runs an unpinned image"
        assert {"secretRef": {"name": "bulkmail-secrets"}} in container["envFrom"]
    mailer = deployments["bulkmail-mailer"]["spec"]
    assert "replicas" not in mailer, "the autoscaler owns the mailer count"
    assert mailer["template"]["spec"]["terminationGracePeriodSeconds"] >= 120
    assert resources[("HorizontalPodAutoscaler", "bulkmail-mailer")]["spec"]["minReplicas"] == 3
    for kind in ("PodDisruptionBudget",):
        assert {name for (k, name) in resources if k == kind} == set(deployments)
    job = resources[("Job", "bulkmail-migrate")]["spec"]["template"]["spec"]
    assert job["containers"][0]["command"] == ["bulkmail", "migrate"]
    assert resources[("Service", "bulkmail-query-api")]["spec"]["ports"][0]["targetPort"] == "http"
