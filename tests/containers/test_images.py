"""The images install exactly the project's versions, run as non-root, and switch the hub/telemetry off."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from components._image import RLSD_IMAGE, RLSD_TRAIN_IMAGE
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from rlsd.config import PlatformConfig
from rlsd.offline import SWITCHES

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = [REPO / "containers" / "Dockerfile.cpu", REPO / "containers" / "Dockerfile.train"]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def project_requirements() -> dict[str, Requirement]:
    return {canonicalize_name(r.name): r for r in map(Requirement, PYPROJECT["project"]["dependencies"])}


def image_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "containers" / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"containers/requirements.txt: {line!r} is not an exact pin"
            pins[canonicalize_name(name)] = version
    return pins


def test_image_requirements_match_pyproject():
    reqs, pins = project_requirements(), image_pins()
    assert set(pins) == set(reqs), f"missing in the images: {set(reqs) - set(pins)}; extra: {set(pins) - set(reqs)}"
    for name, req in reqs.items():
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} violates pyproject's {req}"
        exact = [s.version for s in req.specifier if s.operator == "=="]
        if exact:
            assert pins[name] == exact[0], f"{name}: image {pins[name]} != pyproject {exact[0]}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_pins_agree_non_root_and_offline(dockerfile):
    text = dockerfile.read_text()
    instructions = [re.sub(r"\\\n\s*", " ", block).strip()
                    for block in re.split(r"\n(?=[A-Z]+ )", re.sub(r"(?m)^\s*#.*\n", "", text)) if block.strip()]
    reqs = project_requirements()
    # every package==version written in the Dockerfile agrees with pyproject
    for name, version in re.findall(r"\b([A-Za-z][\w.-]*)==([\w.+]+)", text):
        assert canonicalize_name(name) in reqs and reqs[canonicalize_name(name)].specifier.contains(version), name
    assert "pip install --no-deps ." in text
    _assert_constrained_and_by_digest(text, instructions)
    # non-root: the last USER is a non-zero uid and comes after the last RUN
    users = [i for i, ins in enumerate(instructions) if ins.startswith("USER ")]
    runs = [i for i, ins in enumerate(instructions) if ins.startswith("RUN ")]
    assert users and users[-1] > runs[-1] and instructions[users[-1]].split()[1] not in ("0", "root")
    # every offline switch of rlsd.offline is set in the image's environment
    env = dict(re.findall(r"\b([A-Z][A-Z0-9_]+)=(\S*)", " ".join(i for i in instructions if i.startswith("ENV "))))
    for key, value in SWITCHES.items():
        assert env.get(key) == value, f"{dockerfile.name}: ENV {key}={value} missing"
    assert env["PIP_INDEX_URL"] == ""  # no package index reachable at run time


def _assert_constrained_and_by_digest(text, instructions):
    """Every package install goes through requirements/constraints.txt (torch comes by its exact pin from
    its own index); the base image is a build argument that must carry a digest."""
    assert "COPY requirements/constraints.txt /tmp/constraints" in text
    installs = re.findall(r"pip install ([^&\n]*)", " ".join(instructions))
    for args in installs:
        if "--no-deps ." in args or args.strip().endswith("torch==2.13.0"):
            continue
        assert "-c /tmp/constraints.txt" in args, args
    assert any("-r /tmp/requirements" in a for a in installs) or "mlflow==" in text
    assert instructions[instructions.index(next(i for i in instructions if i.startswith("FROM ")))] == \
        "FROM ${BASE_IMAGE}"
    assert 'case "${BASE_IMAGE}" in *@sha256:*) ;; *)' in text and "exit 1" in text  # a tag alone fails the build


def test_trainer_image_prebuilds_deepspeed_ops_for_a100_and_h100():
    text = (REPO / "containers" / "Dockerfile.train").read_text()
    arch = re.search(r'TORCH_CUDA_ARCH_LIST="([^"]+)"', text).group(1).split(";")
    assert {"8.0", "9.0"} <= set(arch)
    build = text[text.index('TORCH_CUDA_ARCH_LIST='):]
    build = build[:build.index("\n    && python")]
    for op in ("DS_BUILD_FUSED_ADAM=1", "DS_BUILD_CPU_ADAM=1"):
        assert op in build and "pip install --no-build-isolation" in build and "deepspeed==" in build, op


def test_mlflow_server_image_uses_the_project_mlflow():
    text = (REPO / "containers" / "Dockerfile.mlflow").read_text()
    pins = {canonicalize_name(n): v for n, v in re.findall(r"\b([A-Za-z][\w.-]*)==([\w.+]+)", text)}
    assert pins["mlflow"] == image_pins()["mlflow"]
    assert set(pins) == {"mlflow", "psycopg2-binary", "boto3", "flask-wtf"}  # the server's own extras besides mlflow
    constraints = dict(line.split("==", 1) for line in (REPO / "requirements" / "constraints.txt").read_text().split()
                       if "==" in line)
    assert pins["flask-wtf"] == constraints["flask-wtf"]  # the basic-auth app the tests start
    instructions = [re.sub(r"\\\n\s*", " ", b).strip() for b in re.split(r"\n(?=[A-Z]+ )", text) if b.strip()]
    _assert_constrained_and_by_digest(text, [i for i in instructions if not i.startswith("#")])
    assert re.search(r"(?m)^USER 1000$", text) and f"-t registry.local/rlsd/mlflow:{pins['mlflow']} ." in text
    manifest = (REPO / "manifests" / "base" / "mlflow.yaml").read_text()
    assert f"image: registry.local/rlsd/mlflow:{pins['mlflow']}" in manifest


def test_image_tags_are_the_project_version_everywhere():
    version = PYPROJECT["project"]["version"]
    for image in (RLSD_IMAGE, RLSD_TRAIN_IMAGE):
        assert image.endswith(f":{version}"), image
    assert (PlatformConfig.image, PlatformConfig.train_image) == (RLSD_IMAGE, RLSD_TRAIN_IMAGE)
    for dockerfile, image in zip(DOCKERFILES, (RLSD_IMAGE, RLSD_TRAIN_IMAGE)):
        assert f"-t {image} ." in dockerfile.read_text()
