"""A pipeline step reaches MLflow's artifacts through MLflow only.

MLflow 3 advertises multipart (presigned-URL) transfers when its artifact store is S3, and its clients then
download straight from MLflow's own S3 endpoint: ``http://minio:9000`` in manifests/base/mlflow.yaml, a name that
no step's egress allow-list holds. On a cluster, evaluate's download of the champion would be refused by the
perimeter. rlsd.offline switches those transfers off, so every byte goes through MLflow's artifact proxy.
Here: an MLflow server keeping its artifacts in SeaweedFS, and a strict perimeter that allows the MLflow server
only."""

from __future__ import annotations

import pytest

from rlsd import offline
from rlsd.perimeter import PerimeterError, guard

SWITCHES = ("MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD", "MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD")


def _logged(server, tmp_path) -> str:
    import mlflow

    mlflow.set_tracking_uri(server.url)
    (tmp_path / "weights.txt").write_text("the champion's weights\n" * 100)
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(tmp_path / "weights.txt"))
    return run.info.run_id


def _download(server, run_id: str, dest) -> str:
    import mlflow

    with guard([f"127.0.0.1:{server.port}"], mode="strict"):
        got = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="weights.txt", dst_path=str(dest))
    return open(got).read()


@pytest.mark.integration
def test_artifacts_come_through_mlflow_under_a_perimeter_that_allows_mlflow_only(mlflow_server_s3, tmp_path,
                                                                                monkeypatch):
    assert all(offline.SWITCHES[k] == "false" for k in SWITCHES)
    run_id = _logged(mlflow_server_s3, tmp_path)
    for k in SWITCHES:
        monkeypatch.setenv(k, offline.SWITCHES[k])
    assert _download(mlflow_server_s3, run_id, tmp_path / "a") == "the champion's weights\n" * 100
    # the hazard itself: without the switches the client follows a presigned URL to S3, and the step is stopped
    for k in SWITCHES:
        monkeypatch.delenv(k)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail at once (MLflow retries chunks for minutes)
    with pytest.raises(Exception) as refused:  # noqa: PT011 - MLflow's error or the perimeter's, whichever is first
        _download(mlflow_server_s3, run_id, tmp_path / "b")
    assert isinstance(refused.value, PerimeterError) or "chunk" in str(refused.value), refused.value
