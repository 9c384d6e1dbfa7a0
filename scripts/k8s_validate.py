#!/usr/bin/env python3
"""Render every kustomize target under deploy/k8s and validate what comes out, offline.

Targets: ``base``, each ``overlays/*``, and each overlay combined with each optional component
(``components/*``) alone and with all of them together, as an operator would enable them.

Each rendered resource is checked three ways:

1. schema: core kinds against kubernetes-validate's bundled OpenAPI schemas with ``strict``
   (unknown fields fail), for every Kubernetes version in ``--kubernetes-version``; custom
   resources (CloudNativePG, RabbitMQ, KEDA) against the small schemas in
   ``deploy/k8s/crd-schemas/``. A kind with neither schema fails: kubernetes-validate's own
   command line would skip it with a warning, and a skipped resource is an unchecked one.
2. policy: the hardening the pods promise (non-root, read-only root filesystem, no privilege
   escalation, all capabilities dropped, RuntimeDefault seccomp, requests and limits, probes).
3. references: every ConfigMap a pod reads is rendered alongside it (kustomize's hash suffixes
   make a stale name an easy mistake), and no Deployment has two autoscalers.

Exit status 0 when everything passes, 1 when anything fails (each failure printed on stderr,
named by target and resource), 2 when the tools themselves are missing.

    .venv/bin/python scripts/k8s_validate.py [--k8s-dir deploy/k8s] [-k 1.29.0 -k 1.37.0]
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_K8S_DIR = ROOT / "deploy" / "k8s"
# The oldest Kubernetes release we support and the newest whose schemas are bundled.
DEFAULT_VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version())
POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
# Secrets that exist outside the manifests: created by an operator, or out of band.
EXTERNAL_SECRETS = {"bulkmail-secrets", "bulkmail-db-app", "bulkmail-rabbitmq-default-user"}


@dataclass
class Target:
    label: str
    overlay: Path  # relative to the k8s directory
    components: tuple[str, ...] = ()


@dataclass
class Report:
    failures: list[str] = field(default_factory=list)

    def fail(self, target: Target, resource: dict[str, Any] | None, message: str) -> None:
        where = target.label
        if resource is not None:
            where += f": {resource.get('kind', '?')}/{resource.get('metadata', {}).get('name', '?')}"
        self.failures.append(f"{where}: {message}")


def discover_targets(k8s_dir: Path) -> list[Target]:
    targets = [Target("base", Path("base"))]
    overlays = sorted(p.parent for p in (k8s_dir / "overlays").glob("*/kustomization.yaml"))
    components = sorted(p.parent.name for p in (k8s_dir / "components").glob("*/kustomization.yaml"))
    subsets = [()] + [(c,) for c in components] + ([tuple(components)] if len(components) > 1 else [])
    for overlay, subset in itertools.product(overlays, subsets):
        name = f"overlays/{overlay.name}" + "".join(f" +{c}" for c in subset)
        targets.append(Target(name, overlay.relative_to(k8s_dir), subset))
    return targets


def render(kubectl: str, k8s_dir: Path, target: Target) -> list[dict[str, Any]]:
    """``kubectl kustomize`` the target; components are added to a scratch copy of the overlay."""
    with tempfile.TemporaryDirectory(prefix="k8s-validate-") as scratch:
        tree = Path(scratch) / "k8s"
        shutil.copytree(k8s_dir, tree)
        overlay = tree / target.overlay
        if target.components:
            kustomization_file = overlay / "kustomization.yaml"
            kustomization = yaml.safe_load(kustomization_file.read_text())
            existing = list(kustomization.get("components") or [])
            added = [os.path.relpath(tree / "components" / c, overlay) for c in target.components]
            kustomization["components"] = existing + [c for c in added if c not in existing]
            kustomization_file.write_text(yaml.safe_dump(kustomization, sort_keys=False))
        result = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RenderError(result.stderr.strip().replace(scratch, "<tmp>"))
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


class RenderError(Exception):
    pass


def load_crd_schemas(k8s_dir: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> JSON schema, from deploy/k8s/crd-schemas/<kind>.<group>-<version>.yaml."""
    folder = k8s_dir / "crd-schemas"
    common = yaml.safe_load((folder / "_common.yaml").read_text()) if (folder / "_common.yaml").exists() else {}
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(folder.glob("*.yaml")):
        if path.name.startswith("_"):
            continue
        schema = yaml.safe_load(path.read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        for name, definition in common.items():
            schema.setdefault("$defs", {}).setdefault(name, definition)
        props = schema["properties"]
        schemas[(props["apiVersion"]["const"], props["kind"]["const"])] = schema
    return schemas


def _path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def check_schema(
    resource: dict[str, Any],
    versions: tuple[str, ...],
    crd_schemas: dict[tuple[str, str], dict[str, Any]],
    target: Target,
    report: Report,
) -> str:
    """Validate one resource; return "core" or "custom" for the summary."""
    key = (str(resource.get("apiVersion")), str(resource.get("kind")))
    if key in crd_schemas:
        validator = jsonschema.Draft202012Validator(crd_schemas[key])
        for error in sorted(validator.iter_errors(resource), key=lambda e: list(e.absolute_path)):
            report.fail(target, resource, f"{_path(error)}: {error.message} (schema: crd-schemas)")
        return "custom"
    for version in versions:
        try:
            kubernetes_validate.validate(resource, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            report.fail(target, resource, f"{_path(error)}: {error.message} (Kubernetes {version}, strict)")
            break  # the same mistake would be reported once per version
        except kubernetes_validate.SchemaNotFoundError:
            report.fail(
                target,
                resource,
                f"no schema for {key[1]} ({key[0]}) in Kubernetes {version} nor in crd-schemas/: "
                "a wrong apiVersion, or a custom resource that needs a schema there",
            )
            break
    return "core"


def _pod_spec(resource: dict[str, Any]) -> dict[str, Any] | None:
    if resource.get("kind") not in POD_TEMPLATE_KINDS:
        return None
    spec: dict[str, Any] = resource.get("spec", {}).get("template", {}).get("spec", {})
    return spec


def check_policy(resource: dict[str, Any], target: Target, report: Report) -> None:
    pod = _pod_spec(resource)
    if pod is None:
        return
    pod_security = pod.get("securityContext") or {}
    if pod_security.get("runAsNonRoot") is not True:
        report.fail(target, resource, "pod securityContext.runAsNonRoot must be true")
    if pod.get("automountServiceAccountToken") is not False:
        report.fail(target, resource, "automountServiceAccountToken must be false (no pod talks to the API)")
    is_deployment = resource["kind"] == "Deployment"
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if is_deployment and isinstance(grace, int) and grace < 30:
        report.fail(target, resource, "terminationGracePeriodSeconds below 30 s leaves no time to drain")
    for container in pod.get("containers", []) + pod.get("initContainers", []):
        name = f"container {container.get('name')}"
        security = container.get("securityContext") or {}
        if security.get("allowPrivilegeEscalation") is not False:
            report.fail(target, resource, f"{name}: allowPrivilegeEscalation must be false")
        if security.get("readOnlyRootFilesystem") is not True:
            report.fail(target, resource, f"{name}: readOnlyRootFilesystem must be true")
        if "ALL" not in (security.get("capabilities") or {}).get("drop", []):
            report.fail(target, resource, f"{name}: capabilities.drop must include ALL")
        seccomp = (security.get("seccompProfile") or pod_security.get("seccompProfile") or {}).get("type")
        if seccomp != "RuntimeDefault":
            report.fail(target, resource, f"{name}: seccompProfile must be RuntimeDefault")
        resources = container.get("resources") or {}
        for kind_, quantity in itertools.product(("requests", "limits"), ("cpu", "memory")):
            if quantity not in (resources.get(kind_) or {}):
                report.fail(target, resource, f"{name}: resources.{kind_}.{quantity} is not set")
        if is_deployment:
            for probe in ("readinessProbe", "livenessProbe"):
                if probe not in container:
                    report.fail(target, resource, f"{name}: no {probe}")


def _config_refs(pod: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(kind, name) of every ConfigMap and Secret the pod's containers read."""
    for container in pod.get("containers", []) + pod.get("initContainers", []):
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                yield "ConfigMap", source["configMapRef"]["name"]
            if "secretRef" in source:
                yield "Secret", source["secretRef"]["name"]
        for env in container.get("env", []):
            value_from = env.get("valueFrom") or {}
            if "configMapKeyRef" in value_from:
                yield "ConfigMap", value_from["configMapKeyRef"]["name"]
            if "secretKeyRef" in value_from:
                yield "Secret", value_from["secretKeyRef"]["name"]
    for volume in pod.get("volumes", []):
        if "configMap" in volume:
            yield "ConfigMap", volume["configMap"]["name"]
        if "secret" in volume:
            yield "Secret", volume["secret"]["secretName"]


def check_references(resources: list[dict[str, Any]], target: Target, report: Report) -> None:
    rendered = {(r.get("kind"), r.get("metadata", {}).get("name")) for r in resources}
    for resource in resources:
        pod = _pod_spec(resource)
        if pod is None:
            continue
        for kind, name in _config_refs(pod):
            if (kind, name) in rendered or (kind == "Secret" and name in EXTERNAL_SECRETS):
                continue
            report.fail(target, resource, f"reads {kind} {name!r}, which is neither rendered nor a known external one")
    scaled: dict[str, list[str]] = {}
    for resource in resources:
        if resource.get("kind") in {"HorizontalPodAutoscaler", "ScaledObject"}:
            ref = resource.get("spec", {}).get("scaleTargetRef", {}).get("name", "")
            scaled.setdefault(ref, []).append(f"{resource['kind']}/{resource['metadata']['name']}")
    for deployment, scalers in scaled.items():
        if len(scalers) > 1:
            report.fail(target, None, f"{deployment} has {len(scalers)} autoscalers ({', '.join(scalers)})")


def validate(k8s_dir: Path, versions: tuple[str, ...], kubectl: str, only: list[str] | None = None) -> Report:
    report = Report()
    crd_schemas = load_crd_schemas(k8s_dir)
    targets = [t for t in discover_targets(k8s_dir) if not only or t.label in only]
    if not targets:
        report.failures.append(f"no target matches {only}")
    for target in targets:
        try:
            resources = render(kubectl, k8s_dir, target)
        except RenderError as error:
            report.fail(target, None, f"kubectl kustomize failed: {error}")
            print(f"FAIL {target.label}: does not render", file=sys.stderr)
            continue
        before = len(report.failures)
        kinds: dict[str, list[str]] = {"core": [], "custom": []}
        for resource in resources:
            kinds[check_schema(resource, versions, crd_schemas, target, report)].append(resource["kind"])
            check_policy(resource, target, report)
        check_references(resources, target, report)
        status = "ok  " if len(report.failures) == before else "FAIL"
        custom = f"; custom: {', '.join(sorted(set(kinds['custom'])))}" if kinds["custom"] else ""
        print(
            f"{status} {target.label}: {len(resources)} resources "
            f"({len(kinds['core'])} core, strict, Kubernetes {' and '.join(versions)}{custom})"
        )
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--k8s-dir", type=Path, default=DEFAULT_K8S_DIR)
    parser.add_argument(
        "-k",
        "--kubernetes-version",
        action="append",
        dest="versions",
        help=f"validate against this version (repeatable; default {' and '.join(DEFAULT_VERSIONS)})",
    )
    parser.add_argument("--kubectl", default=os.environ.get("KUBECTL", "kubectl"))
    parser.add_argument(
        "--only", action="append", help="only this target, named as printed (repeatable), e.g. 'overlays/prod +keda'"
    )
    args = parser.parse_args(argv)

    kubectl = shutil.which(args.kubectl)
    if kubectl is None:
        print(f"k8s-validate: {args.kubectl!r} not found; it renders the kustomizations", file=sys.stderr)
        return 2
    if not (args.k8s_dir / "base" / "kustomization.yaml").exists():
        print(f"k8s-validate: no base/kustomization.yaml under {args.k8s_dir}", file=sys.stderr)
        return 2
    versions = tuple(args.versions or DEFAULT_VERSIONS)
    report = validate(args.k8s_dir, versions, kubectl, args.only)
    for failure in report.failures:
        print(f"ERROR {failure}", file=sys.stderr)
    if report.failures:
        print(f"k8s-validate: {len(report.failures)} problem(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
