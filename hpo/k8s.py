"""Render Kubernetes manifests that run a sweep as parallel ``hpo agent`` pods.

``hpo k8s SWEEP.yaml | kubectl apply -f -`` applies three documents, all labelled
``app.kubernetes.io/name: hpo`` and ``hpo/sweep: <name>``:

1. ``ConfigMap <name>-sweep``: the sweep file (``sweep.yaml``), minus its ``storage:`` key.
2. ``Job <name>-create``: runs ``hpo sweep /etc/hpo/sweep.yaml --backend agents --name STUDY``
   once. That creates the study and tracking rows (and the grid queue) and exits; it is
   idempotent, so re-applying after the Job was cleaned up resumes the same sweep. Leave it
   out (``create=False``, ``hpo k8s --no-create``) when you ran that command yourself.
3. ``Job <name>-agents``: ``parallelism = completions = N`` pods, each running
   ``hpo agent --study STUDY``. Agents wait (``--max-idle``) for step 2 to create the sweep,
   then pull trials from the study until its budget is spent, and exit 0.

Why a plain (NonIndexed) Job with ``completions: N`` and not an Indexed Job: agents are
interchangeable workers pulling from one queue (the study); a completion index would mean
nothing to them. ``completions = N`` (rather than the work-queue form with completions unset)
also means a pod lost to a node failure is replaced, so N agents keep running.

The storage URL never appears in a manifest: pods read ``HPO_STORAGE`` from a Secret
(``secretKeyRef``). A URL in the sweep file is removed from the ConfigMap (the in-cluster
database is the Secret's), and anything URL-shaped left in the text is masked.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy.engine import make_url

from hpo.config import SweepConfig, load_config
from hpo.errors import ConfigError
from hpo.storage_url import mask_url

SWEEP_KEY = "sweep.yaml"
SWEEP_DIR = "/etc/hpo"
CPU_IMAGE = "hpo:cpu"
CUDA_IMAGE = "hpo:cuda"
USER_ID = 1000
NAME_MAX = 40  # + "-agents" and the pod suffix stays well inside 63 (pod hostnames, labels)
MAX_IDLE_S = 600  # how long an agent waits for the create Job (image pull, database start)
CREATE_DEADLINE_S = 1800  # the create Job takes seconds; this bounds a hung one
DEADLINE_GRACE_S = 900  # budget.minutes + this: startup, and the trials running at the end
TTL_S = 86400  # finished Jobs (and their pods' logs) stay a day; results live in the database
# hpo exits 2 for errors a retry cannot fix (bad sweep file, unknown study, bad storage URL)
USER_ERROR_EXIT = 2

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_QUANTITY = re.compile(r"^(\d+(\.\d+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
_UNITS = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/:@]*$")


# ------------------------------------------------------------------------------- names, values


def dns_name(name: str, max_len: int = NAME_MAX) -> str:
    """A DNS-1123 label (lowercase alphanumerics and '-', <= ``max_len``) for a sweep name.

    A name that is already valid is kept as is. Any other name is lowercased, runs of other
    characters become '-', and a short hash of the original is appended, so two sweeps whose
    names differ only in case or punctuation ("a_b", "A.b") never share Kubernetes objects.
    """
    if len(name) <= max_len and _DNS_LABEL.match(name):
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:6]
    base = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    base = base[: max_len - len(digest) - 1].rstrip("-") or "hpo"
    return f"{base}-{digest}"


def _check_dns(kind: str, value: str, pattern: re.Pattern[str], max_len: int, flag: str) -> None:
    if len(value) > max_len or not pattern.match(value):
        raise ConfigError(
            f"{kind} {value!r} is not a valid Kubernetes name: use lowercase letters, digits and "
            f"'-' (at most {max_len} characters, starting and ending with a letter or digit); "
            f"fix {flag}."
        )


def cpu_quantity(cpu: float) -> str:
    """1 -> "1", 0.5 -> "500m", 2.25 -> "2250m"."""
    if float(cpu).is_integer():
        return str(int(cpu))
    return f"{max(1, math.ceil(cpu * 1000))}m"


def gpu_count(gpu: float | str, source: str = "sweep") -> int:
    """Whole GPUs for ``nvidia.com/gpu``; a fractional request is refused with what to do.
    ``auto`` (memory packing, a Ray-backend feature) means one whole GPU per agent here."""
    if isinstance(gpu, str):
        return 1  # each agent pod runs one trial at a time on its own GPU
    if not float(gpu).is_integer():
        raise ConfigError(
            f"{source}: resources.gpu: {gpu:g} GPUs cannot run as a Kubernetes agent: Kubernetes "
            "schedules whole GPUs (nvidia.com/gpu is an integer). Use gpu: 1 (or more) per "
            "agent; to share one physical GPU between agents, partition it with MIG (request "
            "e.g. nvidia.com/mig-1g.10gb) or enable time-slicing in the NVIDIA device plugin, "
            "which then advertises each share as one whole nvidia.com/gpu. Fractional GPUs do "
            "work with --backend ray (k8s/ray)."
        )
    return int(gpu)


def memory_bytes(quantity: str) -> int:
    """Bytes of a Kubernetes memory quantity ("16Gi", "512Mi", "1G"); ConfigError otherwise."""
    match = _QUANTITY.match(str(quantity).strip())
    if not match:
        raise ConfigError(
            f"memory {quantity!r} is not a Kubernetes quantity: write e.g. 16Gi or 512Mi "
            "(binary units Ki/Mi/Gi/Ti, or decimal k/M/G/T; not GB)."
        )
    value = float(match.group(1)) * _UNITS[match.group(3)]
    if value < 256 * 2**20:
        raise ConfigError(f"memory {quantity!r} is too small for an hpo agent: give >= 256Mi.")
    return int(value)


def default_memory(cpu: float, gpu: int) -> str:
    """Memory request when none is given: 2Gi per CPU (at least 2Gi) plus 8Gi per GPU (a
    GPU trainer stages its model and batches in host memory first)."""
    return f"{max(2, math.ceil(2 * cpu)) + 8 * gpu}Gi"


def _mib(n_bytes: int) -> str:
    return f"{max(64, n_bytes // 2**20)}Mi"


# ------------------------------------------------------------------------- the sweep file


def sweep_text(config: SweepConfig) -> str:
    """The sweep file as the create Job reads it: without ``storage:``, URLs masked.

    The file's own text is kept (comments included) when it can be; the ``storage:`` entry is
    cut out of it. Otherwise (a config built in Python) it is a YAML dump of ``to_dict()``.
    """
    note = "# storage: set in the cluster by the HPO_STORAGE Secret (hpo k8s removed it here)\n"
    text = config.text
    if text is not None and config.storage is not None:
        text = _cut_top_key(text, "storage", note)
    if text is None:
        data = {k: v for k, v in config.to_dict().items() if k != "storage"}
        text = yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
        if config.storage is not None:
            text = note + text
    return mask_url(text)


def _cut_top_key(text: str, key: str, replacement: str) -> str | None:
    """``text`` with the top-level ``key:`` entry replaced by a comment line; None if unsure
    (e.g. a multi-line value), and the caller then dumps the config instead."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return None
    if not isinstance(root, yaml.MappingNode):
        return None
    for key_node, value_node in root.value:
        if key_node.value != key:
            continue
        start, end = key_node.start_mark.index, value_node.end_mark.index
        eol = text.find("\n", end)
        eol = len(text) if eol < 0 else eol + 1
        trailing = text[end:eol].strip()
        if key_node.start_mark.column != 0 or (trailing and not trailing.startswith("#")):
            return None
        out = text[:start] + replacement + text[eol:]
        try:
            data = yaml.safe_load(out)
        except yaml.YAMLError:
            return None
        return out if isinstance(data, dict) and key not in data else None
    return None


def _password(url: str | None) -> str | None:
    if not url:
        return None
    try:
        return make_url(url).password  # type: ignore[return-value]
    except Exception:  # not a URL SQLAlchemy reads: nothing to hide that we can find
        return None


def safe_url(url: str) -> str:
    """The URL with its password hidden, for messages (handles '/' or '@' in a password, and
    ``?password=`` in the query)."""
    return mask_url(url)


# --------------------------------------------------------------------------------- rendering


def render_manifests(
    config: SweepConfig,
    *,
    name: str,
    agents: int,
    image: str,
    namespace: str = "default",
    secret: str = "hpo-storage",
    secret_key: str = "url",
    lease_s: int = 60,
    memory: str | None = None,
    create: bool = True,
    max_idle_s: int = MAX_IDLE_S,
    ttl_s: int = TTL_S,
) -> list[dict[str, Any]]:
    """Kubernetes objects (plain dicts) that run the sweep ``name`` with ``agents`` pods.

    ``name`` is the study name (any string); Kubernetes names use :func:`dns_name` of it.
    Returns [ConfigMap, create Job (when ``create``), agent Job]. Every problem a user can
    fix is a :class:`ConfigError` saying what to change.
    """
    source = config.source or "sweep"
    if not name:
        raise ConfigError("The sweep has no name: set `name:` in the file or pass --name.")
    if agents < 1:
        raise ConfigError(f"--agents {agents}: give at least 1 agent.")
    if lease_s < 5:
        raise ConfigError(f"--lease {lease_s}: a lease shorter than 5 s expires between "
                          "heartbeats; use 30-120.")
    if not _IMAGE.match(image):
        raise ConfigError(f"--image {image!r} is not an image reference (e.g. "
                          "registry.example.com/hpo:cpu).")
    _check_dns("namespace", namespace, _DNS_LABEL, 63, "--namespace")
    _check_dns("secret", secret, _DNS_SUBDOMAIN, 253, "--secret")
    if not _SECRET_KEY.match(secret_key):
        raise ConfigError(f"secret key {secret_key!r}: use letters, digits, '-', '_' or '.'.")
    if config.trial_budget() is None and config.budget.minutes is None and config.method != "grid":
        raise ConfigError(
            f"{source}: budget: agents run until the sweep's budget is spent, and this sweep has "
            "none, so its Job would never finish. Set budget.trials (or run_cap) or "
            "budget.minutes."
        )
    gpus = gpu_count(config.resources.gpu, source)
    memory = memory or default_memory(config.resources.cpu, gpus)
    mem_bytes = memory_bytes(memory)

    base = dns_name(name)
    labels = {"app.kubernetes.io/name": "hpo", "app.kubernetes.io/instance": base,
              "app.kubernetes.io/managed-by": "hpo", "hpo/sweep": base}
    annotations = {"hpo/study": name}

    def meta(obj_name: str, component: str) -> dict[str, Any]:
        return {"name": obj_name, "namespace": namespace,
                "labels": {**labels, "app.kubernetes.io/component": component},
                "annotations": dict(annotations)}

    text = sweep_text(config)
    password = _password(config.storage)
    if password and len(password) >= 4 and password in text:
        raise ConfigError(
            f"{source}: the database password of `storage:` also appears elsewhere in the file; "
            "remove it (pods read the URL from a Secret, and manifests must not carry it)."
        )
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(f"{base}-sweep", "sweep"),
        "data": {SWEEP_KEY: text},
    }
    resources: dict[str, Any] = {
        "requests": {"cpu": cpu_quantity(config.resources.cpu), "memory": memory},
        # memory limit = request: a trial that outgrows it is OOM-killed alone (its lease
        # expires, the study re-queues it) instead of pushing the node into memory pressure.
        # No CPU limit: CFS throttling only slows data loading down.
        "limits": {"memory": memory},
    }
    if gpus:
        resources["limits"]["nvidia.com/gpu"] = str(gpus)  # extended resources: limits only

    def pod(component: str, args: list[str], volumes: list[dict[str, Any]],
            mounts: list[dict[str, Any]]) -> dict[str, Any]:
        container = {
            "name": component,
            "image": image,
            "imagePullPolicy": "IfNotPresent",
            "command": ["hpo"],
            "args": args,
            "env": [
                # never inline: the URL carries the database password
                {"name": "HPO_STORAGE",
                 "valueFrom": {"secretKeyRef": {"name": secret, "key": secret_key}}},
                {"name": "PYTHONUNBUFFERED", "value": "1"},
            ],
            "resources": resources,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": USER_ID,
                "runAsGroup": USER_ID,
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "volumeMounts": mounts,
        }
        spec: dict[str, Any] = {
            # Never: a failed container makes a failed pod that the Job (not the kubelet)
            # replaces, counted against backoffLimit; podFailurePolicy needs it too.
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,  # agents never call the Kubernetes API
            "enableServiceLinks": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": USER_ID,
                "runAsGroup": USER_ID,
                "fsGroup": USER_ID,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [container],
            "volumes": volumes,
        }
        if gpus:
            # GPU node pools are commonly tainted nvidia.com/gpu:NoSchedule
            spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists",
                                    "effect": "NoSchedule"}]
        return {"metadata": {"labels": {**labels, "app.kubernetes.io/component": component}},
                "spec": spec}

    def failure_policy(container: str) -> dict[str, Any]:
        return {"rules": [
            # hpo's "fix your input" exit: retrying the same pod cannot help
            {"action": "FailJob", "onExitCodes": {"containerName": container, "operator": "In",
                                                  "values": [USER_ERROR_EXIT]}},
            # preemption, eviction, node drain: replace the pod without using up backoffLimit
            {"action": "Ignore",
             "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]}

    docs: list[dict[str, Any]] = [configmap]
    if create:
        docs.append({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": meta(f"{base}-create", "create"),
            "spec": {
                "backoffLimit": 3,  # database not up yet, image pull hiccups
                "activeDeadlineSeconds": CREATE_DEADLINE_S,
                "ttlSecondsAfterFinished": ttl_s,
                "podFailurePolicy": failure_policy("create"),
                "template": _with_small_resources(pod(
                    "create",
                    ["sweep", f"{SWEEP_DIR}/{SWEEP_KEY}", "--backend", "agents", "--name", name,
                     "--no-report"],
                    [{"name": "sweep", "configMap": {"name": f"{base}-sweep"}}],
                    [{"name": "sweep", "mountPath": SWEEP_DIR, "readOnly": True}],
                )),
            },
        })

    agent_spec: dict[str, Any] = {
        "parallelism": agents,
        "completions": agents,
        "completionMode": "NonIndexed",
        # Job retries are for infrastructure failures only (a crashed or OOM-killed pod, a
        # lost node). A trial whose pod dies just loses its lease: another agent reaps it and
        # the study re-queues it (max_retries), so a replacement pod re-runs nothing by
        # itself; it joins the sweep, or exits 0 at once when the budget is spent. A pod that
        # exits 2 (bad sweep, wrong storage URL) fails the whole Job: a retry can't fix it.
        "backoffLimit": max(2, agents),
        "podFailurePolicy": failure_policy("agent"),
    }
    if config.budget.minutes:
        # A backstop: agents stop asking for trials when budget.minutes is spent; the grace
        # covers image pulls, waiting for the create Job and the trials running at the end.
        agent_spec["activeDeadlineSeconds"] = (
            math.ceil(config.budget.minutes * 60) + max_idle_s + DEADLINE_GRACE_S
        )
    agent_spec["ttlSecondsAfterFinished"] = ttl_s
    agent_spec["template"] = pod(
        "agent",
        ["agent", "--study", name, "--lease", str(lease_s), "--max-idle", str(max_idle_s)],
        [{"name": "dshm", "emptyDir": {"medium": "Memory",
                                       # tmpfs pages count against the memory limit
                                       "sizeLimit": _mib(mem_bytes // 2)}}],
        # PyTorch DataLoader workers pass batches through /dev/shm (64Mi by default)
        [{"name": "dshm", "mountPath": "/dev/shm"}],
    )
    docs.append({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta(f"{base}-agents", "agent"),
        "spec": agent_spec,
    })
    return docs


def _with_small_resources(template: dict[str, Any]) -> dict[str, Any]:
    """The create Job only writes a few rows: no GPU, small requests."""
    container = template["spec"]["containers"][0]
    container["resources"] = {"requests": {"cpu": "250m", "memory": "512Mi"},
                              "limits": {"memory": "1Gi"}}
    template["spec"].pop("tolerations", None)
    return template


# ------------------------------------------------------------------------------------ output


class _Dumper(yaml.SafeDumper):
    """Block style; multi-line strings (the sweep file) as literal blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(docs: Iterable[Mapping[str, Any]], header: str | None = None) -> str:
    """Multi-document YAML for ``kubectl apply -f -`` (``header`` lines become comments)."""
    body = yaml.dump_all([dict(d) for d in docs], Dumper=_Dumper, sort_keys=False,
                         explicit_start=True, default_flow_style=False, width=100)
    if header:
        body = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines()) + body
    return mask_url(body)


def manifests_for_file(
    path: str | Path,
    *,
    name: str | None = None,
    agents: int | None = None,
    image: str | None = None,
    namespace: str = "default",
    secret: str = "hpo-storage",
    secret_key: str = "url",
    lease_s: int = 60,
    memory: str | None = None,
    create: bool = True,
) -> tuple[str, list[str]]:
    """``hpo k8s``: (the manifests as YAML, notes for stderr). Defaults: agents = the sweep's
    ``parallel`` (at most its trial budget), image ``hpo:cuda`` for GPU sweeps else ``hpo:cpu``.
    """
    from hpo.study import sweep_name

    config = load_config(path)
    study = sweep_name(config, name)
    if agents is None:
        budget = config.trial_budget()
        agents = min(config.parallel, budget) if budget else config.parallel
    if image is None:
        image = CUDA_IMAGE if config.resources.gpu else CPU_IMAGE
    docs = render_manifests(
        config, name=study, agents=agents, image=image, namespace=namespace, secret=secret,
        secret_key=secret_key, lease_s=lease_s, memory=memory, create=create,
    )
    notes = []
    if config.storage is not None:
        notes.append(f"storage {safe_url(config.storage)!r} in {path} is not used in the "
                     f"cluster: pods read HPO_STORAGE from Secret {secret!r} (key {secret_key!r}).")
    base = dns_name(study)
    if base != study:
        notes.append(f"Kubernetes objects are named {base}-* (study {study!r}).")
    header = (
        f"hpo sweep {study!r}: {agents} agent(s), image {image}, namespace {namespace}.\n"
        f"Needs Secret {secret!r} with key {secret_key!r} = the PostgreSQL URL (k8s/README.md).\n"
        f"Apply: hpo k8s ... | kubectl apply -f -    Watch: kubectl get jobs -l hpo/sweep={base}"
    )
    return to_yaml(docs, header=header), notes
