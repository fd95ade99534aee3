"""The KubeRay RayJob: its pods validate strictly against Kubernetes' schemas, its command against the
real CLI, and its sizes against each other.

No tool here knows KubeRay's custom resource (kubernetes-validate has no CRDs, and no package ships
its OpenAPI schema), so the RayJob's own fields are checked by name against the KubeRay v1 API, and
each pod template, the bulk of the manifest, is validated as the core PodTemplate it is.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest
import typer
import yaml
from packaging.requirements import Requirement
from test_kubernetes import tool

from sentiment_api.cli.commands import app

REPO = Path(__file__).resolve().parents[2]
RAYJOB = REPO / "deploy" / "ray" / "rayjob.yaml"
# ray.io/v1 fields, from KubeRay's API reference (v1.6)
RAYJOB_SPEC = {
    "entrypoint", "submissionMode", "shutdownAfterJobFinishes", "ttlSecondsAfterFinished",
    "activeDeadlineSeconds", "backoffLimit", "rayClusterSpec", "runtimeEnvYAML", "suspend",
    "submitterPodTemplate", "submitterConfig", "clusterSelector", "entrypointNumCpus", "deletionStrategy",
}  # fmt: skip
CLUSTER_SPEC = {"rayVersion", "authOptions", "enableInTreeAutoscaling", "headGroupSpec", "workerGroupSpecs"}
HEAD_GROUP = {"rayStartParams", "template", "serviceType", "headService", "enableIngress"}
WORKER_GROUP = {
    "groupName",
    "replicas",
    "minReplicas",
    "maxReplicas",
    "rayStartParams",
    "template",
    "numOfHosts",
}


@pytest.fixture(scope="module")
def job() -> dict:
    return yaml.safe_load(RAYJOB.read_text())


def templates(job: dict) -> list[dict]:
    cluster = job["spec"]["rayClusterSpec"]
    return [
        cluster["headGroupSpec"]["template"],
        *(group["template"] for group in cluster["workerGroupSpecs"]),
    ]


def test_the_rayjob_has_only_fields_kuberay_knows(job) -> None:
    spec = job["spec"]
    cluster = spec["rayClusterSpec"]
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert set(spec) <= RAYJOB_SPEC
    assert set(cluster) <= CLUSTER_SPEC
    assert set(cluster["headGroupSpec"]) <= HEAD_GROUP
    for group in cluster["workerGroupSpecs"]:
        assert set(group) <= WORKER_GROUP
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    assert spec["submissionMode"] in {"K8sJobMode", "HTTPMode", "SidecarMode", "InteractiveMode"}
    assert cluster["authOptions"] == {"mode": "token"}
    for params in [
        cluster["headGroupSpec"]["rayStartParams"],
        *(g["rayStartParams"] for g in cluster["workerGroupSpecs"]),
    ]:
        assert all(isinstance(value, str) for value in params.values())  # a map of strings in the CRD
    assert spec["shutdownAfterJobFinishes"] is True


def test_every_pod_template_validates_strictly_as_a_kubernetes_pod_template(job, tmp_path) -> None:
    documents = [
        {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": f"ray-{i}"}, "template": template}
        for i, template in enumerate(templates(job))
    ]
    (tmp_path / "pods.yaml").write_text(yaml.safe_dump_all(documents))

    result = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "--quiet", str(tmp_path / "pods.yaml")],
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_the_pods_run_the_projects_image_with_the_ray_version_it_installs(job) -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    ray = next(Requirement(line) for line in extras["ray"] if line.startswith("ray"))
    assert ray.specifier.contains(job["spec"]["rayClusterSpec"]["rayVersion"])
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    assert "--build-arg EXTRAS=serve,ray" in RAYJOB.read_text() and "ARG EXTRAS=serve" in dockerfile
    for template in templates(job):
        (container,) = template["spec"]["containers"]
        assert container["image"] == "registry.example.com/sentiment-api:0.1.0-ray"
        assert template["spec"]["securityContext"]["runAsUser"] == 10001  # the image's user
        assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]


def test_the_entrypoint_is_a_predict_command_the_cli_accepts_on_the_shared_volume(job) -> None:
    words = shlex.split(job["spec"]["entrypoint"])
    assert words[:2] == ["sentiment-api", "predict"]
    command = typer.main.get_command(app).commands["predict"]  # type: ignore[attr-defined]

    context = command.make_context("predict", words[2:])  # refuses an unknown or malformed option

    assert context.params["ray_options__ray"] is True
    assert context.params["input"].startswith("/data/") and str(context.params["output"]).startswith("/data/")


def test_actors_fit_the_workers_they_are_sized_for(job) -> None:
    words = shlex.split(job["spec"]["entrypoint"])
    actor_cpus = int(words[words.index("--ray-actor-cpus") + 1])
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"  # the driver's pod takes no actor
    for group in job["spec"]["rayClusterSpec"]["workerGroupSpecs"]:
        (container,) = group["template"]["spec"]["containers"]
        limits = container["resources"]["limits"]
        cpus = int(group["rayStartParams"].get("num-cpus", limits["cpu"]))
        assert cpus % actor_cpus == 0
        memory_gib = float(re.fullmatch(r"(\d+)Gi", limits["memory"]).group(1))
        # an actor holds about 300 MB (BENCHMARKS.md); half the pod is left for Ray and its object store
        assert cpus // actor_cpus * 0.3 <= memory_gib / 2
        assert container["resources"]["requests"] == limits  # Guaranteed: actors are not squeezed
