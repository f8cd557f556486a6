"""Test set-up: one thread, offline switches, DeepSpeed on CPU; shared real-server fixtures
(MLflow and SeaweedFS S3, see tests/mlflow_server.py)."""

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions"))
sys.path.insert(0, str(ROOT))  # components/, pipelines/ and tests/ import from the repository root

from rlsd import offline  # noqa: E402

offline.apply()
import torch  # noqa: E402

torch.set_num_threads(1)

from tests.mlflow_server import mlflow_server, mlflow_server_s3, seaweed_s3  # noqa: E402,F401
