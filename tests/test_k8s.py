"""`hpo k8s` and the k8s/ bases: strict Kubernetes schemas, no credentials, GPU rules, names.

Offline and fast: manifests are validated with kubernetes-validate's bundled schemas (strict:
unknown fields fail) and round-tripped through the `kubernetes` client's models when that
package is installed. `kubectl kustomize` renders the bases when kubectl is on PATH.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from hpo.config import load_config, parse_config
from hpo.errors import ConfigError
from hpo.k8s import dns_name, manifests_for_file, render_manifests, to_yaml

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
# the oldest release we promise (podFailurePolicy is GA from 1.31, beta and on by default in
# 1.30) and the newest that kubernetes-validate ships
VERSIONS = ("1.30", kubernetes_validate.latest_version())
CRDS = {"RayCluster": ("headGroupSpec",), "RayJob": ("entrypoint",)}
MODELS = {"ConfigMap": "V1ConfigMap", "Job": "V1Job", "Secret": "V1Secret",
          "Service": "V1Service", "StatefulSet": "V1StatefulSet",
          "NetworkPolicy": "V1NetworkPolicy"}
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
PASSWORD = "Pa55w0rd-xyz"

SWEEP = """\
# a comment that should survive
name: {name}
method: tpe
metric: {{name: loss, goal: minimize}}
parameters:
  x: {{min: 0.0, max: 1.0}}
  lr: {{distribution: log_uniform_values, min: 1.0e-5, max: 1.0e-2}}
trainer: examples.objectives:sleep
resources: {{cpu: {cpu}, gpu: {gpu}}}
parallel: 3
budget: {budget}
{extra}"""


def write_sweep(tmp_path: Path, name="demo", cpu=2, gpu=0, budget="{trials: 20}",
                extra="") -> Path:
    path = tmp_path / f"{name.replace('/', '_')}.yaml"
    path.write_text(SWEEP.format(name=name, cpu=cpu, gpu=gpu, budget=budget, extra=extra))
    return path


def run_hpo(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "hpo.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def k8s_docs(*args: str) -> list[dict[str, Any]]:
    proc = run_hpo("k8s", *args)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d is not None]


def by_name(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs}


def validate(doc: dict[str, Any]) -> None:
    """Strict schema validation (unknown fields fail) plus a client-model round trip."""
    for version in VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{doc['kind']} {doc['metadata'].get('name')} fails "
                                 f"Kubernetes {version}: {exc}") from None
    roundtrip(doc)


def roundtrip(doc: dict[str, Any]) -> None:
    """The kubernetes client's models know every field: deserialize -> serialize is lossless."""
    try:
        from kubernetes.client import ApiClient
    except ImportError:  # optional: kubernetes-validate above is the required check
        return
    api = ApiClient()
    obj = api._ApiClient__deserialize(doc, MODELS[doc["kind"]])  # the documented internal
    assert api.sanitize_for_serialization(obj) == doc


def validate_crd(doc: dict[str, Any]) -> None:
    """Custom resources: no schema here; check the shape, and strict-validate each embedded
    pod template as a v1 PodTemplate."""
    assert doc["apiVersion"] == "ray.io/v1"
    assert doc["metadata"]["name"] and DNS_LABEL.match(doc["metadata"]["name"])
    for key in CRDS[doc["kind"]]:
        assert doc["spec"].get(key), f"{doc['kind']}: spec.{key} missing"
    spec = doc["spec"]
    templates = []
    if doc["kind"] == "RayCluster":
        templates = [spec["headGroupSpec"]["template"]]
        templates += [g["template"] for g in spec.get("workerGroupSpecs", [])]
    elif spec.get("submitterPodTemplate"):
        templates = [spec["submitterPodTemplate"]]
    for template in templates:
        wrapped = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"},
                   "template": template}
        for version in VERSIONS:
            kubernetes_validate.validate(wrapped, version, strict=True)
        assert template["spec"]["securityContext"]["runAsNonRoot"] is True


def check_doc(doc: dict[str, Any]) -> None:
    if doc["kind"] in CRDS:
        validate_crd(doc)
    else:
        validate(doc)


# ------------------------------------------------------------------------- hpo k8s output


def test_cpu_sweep_manifests_validate(tmp_path):
    docs = k8s_docs(str(write_sweep(tmp_path)), "--agents", "3", "--image",
                    "registry.example.com/team/hpo:cpu", "--namespace", "sweeps")
    assert [d["kind"] for d in docs] == ["ConfigMap", "Job", "Job"]
    for doc in docs:
        validate(doc)
        assert doc["metadata"]["namespace"] == "sweeps"
        assert doc["metadata"]["labels"]["app.kubernetes.io/name"] == "hpo"
        assert doc["metadata"]["labels"]["hpo/sweep"] == "demo"
    objs = by_name(docs)
    job = objs["demo-agents"]["spec"]
    assert job["parallelism"] == job["completions"] == 3
    assert job["completionMode"] == "NonIndexed"
    assert job["ttlSecondsAfterFinished"] > 0 and job["backoffLimit"] >= 2
    assert "activeDeadlineSeconds" not in job  # no budget.minutes
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 1000,
                                      "runAsGroup": 1000, "fsGroup": 1000,
                                      "seccompProfile": {"type": "RuntimeDefault"}}
    (c,) = pod["containers"]
    assert c["image"] == "registry.example.com/team/hpo:cpu"
    assert c["command"] == ["hpo"] and c["args"][:3] == ["agent", "--study", "demo"]
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert c["securityContext"]["runAsUser"] == 1000
    assert c["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["resources"]["requests"] == {"cpu": "2", "memory": "4Gi"}
    assert "nvidia.com/gpu" not in c["resources"]["limits"] and "tolerations" not in pod
    (shm,) = pod["volumes"]
    assert shm["emptyDir"]["medium"] == "Memory"
    assert {"name": shm["name"], "mountPath": "/dev/shm"} in c["volumeMounts"]
    # podFailurePolicy: exit 2 (user error) fails the Job, disruptions don't count
    rules = job["podFailurePolicy"]["rules"]
    assert rules[0]["action"] == "FailJob" and rules[0]["onExitCodes"]["values"] == [2]
    assert rules[1] == {"action": "Ignore",
                        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    # the create Job runs `hpo sweep --backend agents` on the mounted ConfigMap
    create = objs["demo-create"]["spec"]["template"]["spec"]
    assert create["containers"][0]["args"][:4] == ["sweep", "/etc/hpo/sweep.yaml", "--backend",
                                                   "agents"]
    assert create["volumes"][0]["configMap"]["name"] == "demo-sweep"


def test_gpu_sweep_manifests_validate(tmp_path):
    docs = k8s_docs(str(write_sweep(tmp_path, name="gpu-sweep", cpu=4, gpu=1)))
    for doc in docs:
        validate(doc)
    job = by_name(docs)["gpu-sweep-agents"]["spec"]
    pod = job["template"]["spec"]
    res = pod["containers"][0]["resources"]
    assert res["limits"]["nvidia.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in res["requests"]
    assert res["requests"]["memory"] == res["limits"]["memory"] == "16Gi"  # 2Gi/CPU + 8Gi/GPU
    assert pod["containers"][0]["image"] == "hpo:cuda"  # default image for GPU sweeps
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in \
        pod["tolerations"]
    assert job["parallelism"] == 3  # default: the sweep's parallel
    create = by_name(docs)["gpu-sweep-create"]["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in create["containers"][0]["resources"]["limits"]


def test_gpu_count_from_resources():
    config = parse_config(yaml.safe_load(SWEEP.format(name="g", cpu=8, gpu=2,
                                                      budget="{trials: 4}", extra="")))
    docs = render_manifests(config, name="g", agents=2, image="hpo:cuda", memory="40Gi")
    c = docs[-1]["spec"]["template"]["spec"]["containers"][0]
    assert c["resources"]["limits"] == {"memory": "40Gi", "nvidia.com/gpu": "2"}
    assert docs[-1]["spec"]["template"]["spec"]["volumes"][0]["emptyDir"]["sizeLimit"] == \
        "20480Mi"


def test_fractional_gpu_is_refused_clearly(tmp_path):
    proc = run_hpo("k8s", str(write_sweep(tmp_path, gpu=0.5)))
    assert proc.returncode == 2
    message = " ".join(proc.stderr.split())
    assert "resources.gpu" in message and "whole GPUs" in message
    assert "MIG" in message and "time-slicing" in message and "--backend ray" in message
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_no_password_in_output(tmp_path):
    url = f"postgresql+psycopg2://hpo:{PASSWORD}@db.example.com:5432/hpo"
    sweep = write_sweep(tmp_path, extra=f"storage: {url}   # the shared database\n")
    proc = run_hpo("k8s", str(sweep))
    assert proc.returncode == 0, proc.stderr
    assert PASSWORD not in proc.stdout and PASSWORD not in proc.stderr
    assert "hpo:***@db.example.com" in proc.stderr  # the note says which URL was dropped
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    for doc in docs:
        validate(doc)
    # the URL reaches pods only through the Secret
    for job in docs[1:]:
        (env,) = [e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
                  if e["name"] == "HPO_STORAGE"]
        assert env == {"name": "HPO_STORAGE", "valueFrom": {"secretKeyRef": {
            "name": "hpo-storage", "key": "url"}}}
    # the ConfigMap's sweep has no storage, keeps the comments, and is the same sweep
    text = docs[0]["data"]["sweep.yaml"]
    assert "# a comment that should survive" in text and "storage:" not in text.replace(
        "# storage:", "")
    original = load_config(sweep).to_dict()
    original.pop("storage")
    assert parse_config(yaml.safe_load(text)).to_dict() == original


def test_other_urls_are_masked_and_a_repeated_password_is_refused(tmp_path):
    extra = "trainer_args: {callback: 'https://bot:tok3n-value@hooks.example.com/x'}\n"
    text, _ = manifests_for_file(write_sweep(tmp_path, extra=extra))
    assert "tok3n-value" not in text and "bot:***@hooks.example.com" in text

    url = f"postgresql://hpo:{PASSWORD}@db/hpo"
    extra = f"storage: {url}\ntrainer_args: {{db_password: '{PASSWORD}'}}\n"
    with pytest.raises(ConfigError, match="password of `storage:` also appears"):
        manifests_for_file(write_sweep(tmp_path, name="again", extra=extra))


def test_storage_in_flow_or_dumped_config_is_removed():
    """A config built in Python (no file text) is dumped without its storage key."""
    data = yaml.safe_load(SWEEP.format(name="py", cpu=1, gpu=0, budget="{trials: 3}",
                                       extra=f"storage: postgresql://u:{PASSWORD}@h/db\n"))
    config = parse_config(data)
    docs = render_manifests(config, name="py", agents=1, image="hpo:cpu")
    assert PASSWORD not in to_yaml(docs)
    assert "storage" not in yaml.safe_load(docs[0]["data"]["sweep.yaml"])


@pytest.mark.parametrize(
    ("name", "expected"),
    [("lora", "lora"), ("my-sweep-2", "my-sweep-2"), ("LoRA_test", None),
     ("lr sweep #1", None), ("___", None), ("a" * 80, None), ("über.sweep", None)],
)
def test_dns_names(name, expected):
    out = dns_name(name)
    assert DNS_LABEL.match(out) and len(out) <= 40
    if expected is not None:
        assert out == expected  # valid names are kept as they are
    else:
        assert out != name and re.search(r"-[0-9a-f]{6}$", out)


def test_distinct_names_stay_distinct():
    names = ["a_b", "a.b", "A_b", "a b", "a-b"]
    assert len({dns_name(n) for n in names}) == len(names)


def test_name_sanitized_study_kept(tmp_path):
    docs = k8s_docs(str(write_sweep(tmp_path, name="LoRA_test")))
    base = dns_name("LoRA_test")
    assert base.startswith("lora-test-")
    for doc in docs:
        validate(doc)
        assert doc["metadata"]["name"].startswith(base)
        assert DNS_LABEL.match(doc["metadata"]["name"]) and len(doc["metadata"]["name"]) <= 63
        assert doc["metadata"]["labels"]["hpo/sweep"] == base
        assert doc["metadata"]["annotations"]["hpo/study"] == "LoRA_test"
    agent_args = by_name(docs)[f"{base}-agents"]["spec"]["template"]["spec"]["containers"][0][
        "args"]
    assert agent_args[:3] == ["agent", "--study", "LoRA_test"]
    create_args = by_name(docs)[f"{base}-create"]["spec"]["template"]["spec"]["containers"][0][
        "args"]
    assert create_args[create_args.index("--name") + 1] == "LoRA_test"
    # --name overrides the file's name, as in `hpo sweep --name`
    docs = k8s_docs(str(write_sweep(tmp_path, name="LoRA_test")), "--name", "other")
    assert {d["metadata"]["name"] for d in docs} == {"other-sweep", "other-create",
                                                     "other-agents"}


def test_budget_minutes_sets_deadline_and_unbounded_is_refused(tmp_path):
    docs = k8s_docs(str(write_sweep(tmp_path, budget="{minutes: 30}")), "--no-create")
    assert [d["kind"] for d in docs] == ["ConfigMap", "Job"]
    assert docs[-1]["spec"]["activeDeadlineSeconds"] == 30 * 60 + 600 + 900
    validate(docs[-1])
    proc = run_hpo("k8s", str(write_sweep(tmp_path, name="forever", budget="{}")))
    assert proc.returncode == 2 and "budget" in proc.stderr and "never finish" in proc.stderr


def test_bad_options_are_config_errors(tmp_path):
    config = load_config(write_sweep(tmp_path))
    bad = [
        ({"memory": "16GB"}, "16Gi"),
        ({"namespace": "My_NS"}, "--namespace"),
        ({"secret": "Bad Secret"}, "--secret"),
        ({"agents": 0}, "at least 1"),
        ({"image": "has space:1"}, "image"),
        ({"lease_s": 1}, "lease"),
    ]
    for kwargs, words in bad:
        args: dict[str, Any] = {"name": "demo", "agents": 2, "image": "hpo:cpu", **kwargs}
        with pytest.raises(ConfigError, match=re.escape(words)):
            render_manifests(config, **args)


def test_default_agents_capped_by_budget(tmp_path):
    text, _ = manifests_for_file(write_sweep(tmp_path, budget="{trials: 2}"))
    job = [d for d in yaml.safe_load_all(text) if d][-1]
    assert job["spec"]["parallelism"] == job["spec"]["completions"] == 2


def test_to_yaml_is_multi_document_with_literal_sweep(tmp_path):
    text, _ = manifests_for_file(write_sweep(tmp_path))
    assert len(re.findall(r"^---$", text, re.M)) == 3 and "sweep.yaml: |" in text
    assert len([d for d in yaml.safe_load_all(text) if d]) == 3


# --------------------------------------------------------------------------- k8s/ bases

BASE_FILES = sorted(p for p in K8S.rglob("*.yaml")
                    if p.name not in ("kustomization.yaml", "sweep.yaml"))


@pytest.mark.parametrize("path", BASE_FILES, ids=lambda p: str(p.relative_to(K8S)))
def test_base_manifests_validate(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs
    for doc in docs:
        check_doc(doc)
        assert doc["metadata"]["labels"]["app.kubernetes.io/name"] == "hpo"


@pytest.mark.parametrize("base", ["postgres", "agent", "ray"])
def test_kustomizations(base):
    folder = K8S / base
    kust = yaml.safe_load((folder / "kustomization.yaml").read_text())
    assert kust["kind"] == "Kustomization"
    for resource in kust["resources"]:
        assert (folder / resource).is_file(), resource
    for gen in kust.get("configMapGenerator", []):
        for file in gen["files"]:
            load_config(folder / file)  # the sweeps the bases ship are valid sweeps
    if base == "postgres":
        assert "secret.example.yaml" not in kust["resources"]  # a template, never applied
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not on PATH: kustomize output not rendered (files checked above)")
    out = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert len(docs) == len(kust["resources"]) + len(kust.get("configMapGenerator", []))
    for doc in docs:
        check_doc(doc)


def test_agent_base_is_what_hpo_k8s_prints():
    """k8s/agent's Jobs are `hpo k8s k8s/agent/sweep.yaml --agents 4` without a namespace."""
    config = load_config(K8S / "agent" / "sweep.yaml")
    rendered = render_manifests(config, name="branin", agents=4, image="hpo:cpu")
    for doc in rendered:
        del doc["metadata"]["namespace"]
    expected = by_name(rendered)
    for file in ("create-job.yaml", "job.yaml"):
        doc = yaml.safe_load((K8S / "agent" / file).read_text())
        assert doc == expected[doc["metadata"]["name"]], file
    kust = yaml.safe_load((K8S / "agent" / "kustomization.yaml").read_text())
    (gen,) = kust["configMapGenerator"]
    assert gen["name"] == expected["branin-sweep"]["metadata"]["name"]
    assert gen["options"]["labels"] == expected["branin-sweep"]["metadata"]["labels"]


def test_secret_template_matches_what_pods_read():
    secret = yaml.safe_load((K8S / "postgres" / "secret.example.yaml").read_text())
    sts = yaml.safe_load((K8S / "postgres" / "statefulset.yaml").read_text())
    (pg,) = sts["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in pg["env"]}
    ref = env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == secret["metadata"]["name"] == "hpo-storage"
    assert ref["key"] in secret["stringData"] and "url" in secret["stringData"]
    assert "CHANGE-ME" in secret["stringData"]["url"]
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
    service = yaml.safe_load((K8S / "postgres" / "service.yaml").read_text())
    assert service["spec"]["clusterIP"] == "None"
    assert sts["spec"]["serviceName"] == service["metadata"]["name"]
    assert f"@{service['metadata']['name']}:5432/" in secret["stringData"]["url"]


def test_rayjob_runs_the_ray_backend_on_the_cluster():
    cluster = yaml.safe_load((K8S / "ray" / "raycluster.yaml").read_text())
    job = yaml.safe_load((K8S / "ray" / "rayjob.yaml").read_text())
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    assert "--backend ray" in job["spec"]["entrypoint"]
    (group,) = cluster["spec"]["workerGroupSpecs"]
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert int(limits["nvidia.com/gpu"]) >= 1
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]
    mounts = {m["mountPath"] for m in head["containers"][0]["volumeMounts"]}
    assert "/etc/hpo" in mounts and job["spec"]["entrypoint"].split()[2].startswith("/etc/hpo/")


# ------------------------------------------------------------------------------ the image


def test_dockerfile_shape():
    text = (REPO / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) >= 3  # base, builder, runtime
    assert "ARG BASE=python:3.11-slim" in text
    assert re.search(r"^USER 1000(:1000)?$", text, re.M)
    assert 'ENTRYPOINT ["hpo"]' in text
    assert 'HPO_EXTRAS=cpu' in text and "TORCH_INDEX_URL" in text
    allowed = {line[1:].rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.startswith("!")}
    for sources in re.findall(r"^COPY (?!--from)(.+?) \S+$", text, re.M):
        for src in sources.split():
            assert (REPO / src).exists(), src
            assert src in allowed, f"{src} is excluded by .dockerignore"


def test_dockerfile_dependency_layer_builds_from_empty_packages(tmp_path):
    """The image installs the dependencies from empty copies of the packages (so editing hpo
    does not reinstall Ray): the stub command it runs must make every package pyproject
    lists, or setuptools refuses ("package directory ... does not exist")."""
    import shutil
    import subprocess
    import sys
    import zipfile

    text = (REPO / "Dockerfile").read_text()
    (stub,) = re.findall(r'^\s+python -c "(import os, tomllib;.*?)" \\$', text, re.M)
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    shutil.copy(REPO / "README.md", tmp_path)
    subprocess.run([sys.executable, "-c", stub], cwd=tmp_path, check=True)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "--no-build-isolation", "-w", str(tmp_path / "dist"), "."],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("hpo-*.whl")
    assert "hpo_trainers/__init__.py" in zipfile.ZipFile(wheel).namelist()


def test_gpu_auto_means_one_whole_gpu_per_agent():
    from hpo.k8s import gpu_count

    assert gpu_count("auto") == 1 and gpu_count(2) == 2
