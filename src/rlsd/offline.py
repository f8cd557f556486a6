"""The perimeter's environment switches: no model hub, no telemetry.

``apply()`` must run before transformers / huggingface_hub / mlflow / great_expectations are
imported; every rlsd entry point calls it first. Values already set by the operator win.
"""

from __future__ import annotations

import os

SWITCHES = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
    "DO_NOT_TRACK": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING": "false",
    # MLflow 3 reads DO_NOT_TRACK only when it is "true", not "1": switch its telemetry off by name.
    "MLFLOW_DISABLE_TELEMETRY": "true",
    # MLflow 3 advertises multipart transfers when its artifact store is S3, and its clients then follow
    # presigned URLs to MLflow's own S3 endpoint (http://minio:9000 in manifests/base/mlflow.yaml), a name no
    # step's egress allow-list holds: every artifact byte goes through MLflow's proxy instead.
    "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD": "false",
    "MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD": "false",
    "TOKENIZERS_PARALLELISM": "false",
    "DS_BUILD_OPS": "0",
}


def apply() -> None:
    for k, v in SWITCHES.items():
        os.environ.setdefault(k, v)
