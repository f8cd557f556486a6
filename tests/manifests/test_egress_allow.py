"""The operator's egress allow-list reaches every pipeline step: the ConfigMap of manifests/base renders in
every overlay, every step of the compiled pipeline maps it to RLSD_EGRESS_ALLOW, and with exactly that
value the cluster recipe's store and tracking server are allowed (without it a step is refused)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from tests.manifests.test_manifests import by_kind, render

from rlsd import perimeter
from rlsd.config import load_config

REPO = Path(__file__).resolve().parents[2]


def _allow_value(overlay: str = "dev") -> str:
    cm = by_kind(render(overlay), "ConfigMap")["rlsd-egress-allow"]
    return cm["data"]["allow"]


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_the_allow_list_configmap_renders_in_every_overlay(overlay):
    entries = [e.strip() for e in _allow_value(overlay).replace(",", " ").split()]
    assert "minio.rlsd.svc.cluster.local:9000" in entries and "mlflow.rlsd.svc.cluster.local:5000" in entries


def test_every_step_of_the_compiled_pipeline_reads_the_allow_list():
    spec, platform = yaml.safe_load_all((REPO / "pipelines" / "rlsd_pipeline.yaml").read_text())
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    executors = spec["deploymentSpec"]["executors"]
    assert len(executors) >= 6
    for ex in executors:
        maps = {k["envVar"]: c["configMapName"] for c in k8s[ex].get("configMapAsEnv", []) for k in c["keyToEnv"]}
        assert maps.get("RLSD_EGRESS_ALLOW") == "rlsd-egress-allow", ex


def test_the_cluster_recipe_passes_with_the_configmap_and_is_refused_without_it():
    cfg = load_config(REPO / "configs" / "kubeflow.yaml")
    env = {perimeter.ALLOW_ENV: _allow_value(), perimeter.ALLOW_FILE_ENV: "/nonexistent"}
    allow = perimeter.operator_allow_list(env)
    with perimeter.guard(allow, mode="strict") as g:
        perimeter.check_run_destinations(g, cfg)  # store.endpoint and tracking.uri inside: no error
    bare = perimeter.operator_allow_list({perimeter.ALLOW_FILE_ENV: "/nonexistent"})
    with pytest.raises(perimeter.PerimeterError, match="store.endpoint names minio.rlsd.svc.cluster.local:9000"):
        with perimeter.guard(bare, mode="strict") as g:
            perimeter.check_run_destinations(g, cfg)


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_the_presigned_urls_mlflow_hands_the_steps_are_inside_the_allow_list(overlay):
    """MLflow 3 serving S3 artifacts advertises multipart (presigned) downloads, so a step that loads a
    registered model (the champion) downloads from URLs on the server's MLFLOW_S3_ENDPOINT_URL host, not
    through MLflow: that host must be one the step's perimeter allows, or every champion fetch is refused."""
    from urllib.parse import urlsplit

    from mlflow.store.artifact.artifact_repo import MultipartDownloadMixin
    from mlflow.store.artifact.s3_artifact_repo import S3ArtifactRepository

    assert issubclass(S3ArtifactRepository, MultipartDownloadMixin)  # what /server-info advertises
    dep = by_kind(render(overlay), "Deployment")["mlflow"]["spec"]["template"]["spec"]["containers"][0]
    endpoint = urlsplit(next(e["value"] for e in dep["env"] if e["name"] == "MLFLOW_S3_ENDPOINT_URL"))
    env = {perimeter.ALLOW_ENV: _allow_value(overlay), perimeter.ALLOW_FILE_ENV: "/nonexistent"}
    with perimeter.guard(perimeter.operator_allow_list(env), mode="record") as g:
        assert g.permits(endpoint.hostname, endpoint.port)[0], endpoint.netloc
