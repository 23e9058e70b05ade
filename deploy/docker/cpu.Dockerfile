# syntax=docker/dockerfile:1
# arpo's slim CPU image: controller, agent and tools, plus rollout (HF engine) and learner (torch) for
# the compose `cpu` profile and the Kubernetes cpu-dev overlay. One image, one service per container:
# the command is `python -m arpo.services.<name>` and ARPO_SERVICE names it for the health check.
#   docker build -f deploy/docker/cpu.Dockerfile -t arpo-cpu:0.1.0 .
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/arpo
ENV PATH=/opt/arpo/bin:$PATH
# torch first, from PyTorch's CPU index, so nothing later resolves it to a CUDA build.
ARG TORCH_VERSION=2.13.0
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY arpo ./arpo
RUN pip install /src

FROM ${PYTHON_IMAGE}
# bubblewrap: the namespaces of the tool sandbox (ARPO_TOOLS_ISOLATION=namespaces, the default).
RUN apt-get update \
    && apt-get install -y --no-install-recommends bubblewrap=0.8.0-2+deb12u1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin arpo \
    && mkdir -p /var/cache/arpo /var/cache/huggingface /var/lib/arpo \
    && chown arpo:arpo /var/cache/arpo /var/cache/huggingface /var/lib/arpo
COPY --from=build /opt/arpo /opt/arpo
# ARPO_CACHE: built-in models, datasets and indexes; HF_HOME: hub downloads; /var/lib/arpo: runs
# (weights, checkpoints), shared by learner and rollout. Mount volumes there; the root filesystem can
# be read-only (the Kubernetes manifests make it so, with /tmp an emptyDir).
ENV PATH=/opt/arpo/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ARPO_CACHE=/var/cache/arpo \
    HF_HOME=/var/cache/huggingface \
    ARPO_SERVICE=controller \
    ARPO_CONTROLLER_HOST=0.0.0.0 \
    ARPO_ROLLOUT_HOST=0.0.0.0 \
    ARPO_TOOLS_HOST=0.0.0.0 \
    ARPO_AGENT_HOST=0.0.0.0 \
    ARPO_LEARNER_HOST=0.0.0.0 \
    ARPO_LEARNER_DIRECTORY=/var/lib/arpo/runs
USER 10001:10001
WORKDIR /home/arpo
EXPOSE 8000 8001 8002 8003 8004
HEALTHCHECK --interval=15s --timeout=10s --start-period=120s --retries=3 \
    CMD ["python", "-m", "arpo.services.health"]
CMD ["python", "-m", "arpo.services.controller"]
