"""rlsd: RL with verifiable rewards plus self-distillation, on an enterprise's own data and GPUs.

Importing the package is light: heavy dependencies (transformers, deepspeed, mlflow, kfp, minio,
great_expectations) are imported by the modules that need them.
"""

__version__ = "0.1.0"
