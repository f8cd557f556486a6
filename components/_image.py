"""The images every component runs in: one constant each, built from containers/ (tag = rlsd version).

A private registry inside the perimeter; nothing is pulled from a public registry at run time.
tests/containers checks these tags against containers/ and rlsd.config.PlatformConfig.
"""

RLSD_IMAGE = "registry.local/rlsd/rlsd-cpu:0.1.0"          # containers/Dockerfile.cpu: light steps
RLSD_TRAIN_IMAGE = "registry.local/rlsd/rlsd-train:0.1.0"  # containers/Dockerfile.train: CUDA + DeepSpeed
