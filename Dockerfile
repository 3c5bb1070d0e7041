# syntax=docker/dockerfile:1.7
# The hpo image: `hpo agent` pods, the create-sweep Job, and Ray head/worker pods.
#
# CPU (default; torch from PyTorch's CPU index, pinned by the `cpu` extra):
#   docker build -t hpo:cpu .
# CUDA (torch from PyTorch's CUDA index; the base supplies CUDA's user-space runtime):
#   docker build -t hpo:cuda \
#     --build-arg BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 \
#     --build-arg HPO_EXTRAS=ray,trainers .
# Keep TORCH_INDEX_URL's CUDA version (cu128) at or below the base image's CUDA (12.8) and the
# nodes' driver, and TORCH_VERSION one that index has. The CUDA base has no Python: Ubuntu
# 24.04's python3 (3.12) is installed into it.
#
# The user is uid/gid 1000 (k8s manifests: runAsUser 1000, runAsNonRoot).

ARG BASE=python:3.11-slim

# ---------------------------------------------------------------------------------- base
# The runtime both stages share: Python, and the few system tools the pods need.
FROM ${BASE} AS base
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# python3 + venv only where the base lacks them (nvidia/cuda); bash and wget for KubeRay's
# container command and health probes; ca-certificates for HTTPS model/data downloads.
RUN set -eux; \
    pkgs="ca-certificates wget"; \
    if ! command -v python3 >/dev/null; then pkgs="$pkgs python3 python3-venv"; fi; \
    apt-get update; \
    apt-get install -y --no-install-recommends $pkgs; \
    rm -rf /var/lib/apt/lists/*

# ------------------------------------------------------------------------------- builder
FROM base AS builder
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0
ARG HPO_EXTRAS=cpu,ray,trainers
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, from the index for this variant: PyPI's Linux wheel would pull in the CUDA
# libraries (gigabytes) even for the CPU image, and the CUDA image needs a matching build.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
WORKDIR /src
# Dependencies in their own layer, from an empty copy of each package, so that editing hpo's
# code doesn't reinstall Ray and transformers. The `cpu` extra pins torch to the version just
# installed (2.13.0+cpu satisfies torch==2.13.0), so pip keeps it.
COPY pyproject.toml README.md ./
RUN --mount=type=cache,target=/root/.cache/pip \
    python -c "import os, tomllib; st = tomllib.load(open('pyproject.toml', 'rb'))['tool']['setuptools']; dirs = [st['package-dir'].get(p, p.replace('.', '/')) for p in st['packages']]; [os.makedirs(d, exist_ok=True) or open(d + '/__init__.py', 'a').close() for d in dirs]" \
    && pip install ".${HPO_EXTRAS:+[$HPO_EXTRAS]}" \
    && pip uninstall -y hpo \
    && rm -rf hpo trainers build ./*.egg-info
COPY hpo ./hpo
COPY trainers ./trainers
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --no-deps . \
    && cd / && python -c "import hpo, hpo_trainers, torch; print('torch', torch.__version__)" \
    && hpo --help >/dev/null

# ------------------------------------------------------------------------------- runtime
FROM base AS runtime
# Ubuntu 24.04 images ship a user `ubuntu` with uid 1000: make room for ours.
RUN set -eux; \
    old_user="$(getent passwd 1000 | cut -d: -f1)"; \
    if [ -n "$old_user" ]; then userdel -r "$old_user" 2>/dev/null || userdel "$old_user"; fi; \
    old_group="$(getent group 1000 | cut -d: -f1)"; \
    if [ -n "$old_group" ]; then groupdel "$old_group"; fi; \
    groupadd --gid 1000 hpo; \
    useradd --uid 1000 --gid hpo --create-home --home-dir /home/hpo --shell /bin/bash hpo; \
    mkdir -p /home/hpo/work; \
    chown -R hpo:hpo /home/hpo
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/home/hpo \
    HF_HOME=/home/hpo/.cache/huggingface
# Trainers write artifacts/ here; mount a volume on /home/hpo/work/artifacts to keep them.
# The demo objectives (examples/, not an installed package) are importable from here.
WORKDIR /home/hpo/work
COPY examples ./examples
USER 1000:1000
LABEL org.opencontainers.image.title="hpo" \
      org.opencontainers.image.description="hpo agents and sweeps (hyperparameter optimization)" \
      org.opencontainers.image.licenses="Apache-2.0"
ENTRYPOINT ["hpo"]
CMD ["--help"]
