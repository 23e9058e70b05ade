# syntax=docker/dockerfile:1
# arpo's GPU image: rollout (vLLM, or the HF engine) and learner (DeepSpeed, or torch). The CUDA runtime
# comes with the torch and vLLM wheels (nvidia-* packages); the host's driver is injected by the NVIDIA
# Container Toolkit, so the base is the same slim Python as the CPU image. DeepSpeed builds no ops: the
# learner hands it torch's AdamW, so no nvcc is needed.
#   docker build -f deploy/docker/gpu.Dockerfile -t arpo-gpu:0.1.0 .
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/arpo
ENV PATH=/opt/arpo/bin:$PATH
# vLLM pins its torch (2.8.0 for vLLM 0.10.2, CUDA 12.8 wheels); install it first so the project's
# `torch>=2.4` is already met.
ARG VLLM_VERSION=0.10.2
ARG DEEPSPEED_VERSION=0.17.6
RUN DS_BUILD_OPS=0 pip install "vllm==${VLLM_VERSION}" "deepspeed==${DEEPSPEED_VERSION}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY arpo ./arpo
RUN pip install /src

FROM ${PYTHON_IMAGE}
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin arpo \
    && mkdir -p /var/cache/arpo /var/cache/huggingface /var/lib/arpo \
    && chown arpo:arpo /var/cache/arpo /var/cache/huggingface /var/lib/arpo
COPY --from=build /opt/arpo /opt/arpo
ENV PATH=/opt/arpo/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    ARPO_CACHE=/var/cache/arpo \
    HF_HOME=/var/cache/huggingface \
    ARPO_SERVICE=rollout \
    ARPO_ROLLOUT_HOST=0.0.0.0 \
    ARPO_ROLLOUT_ENGINE=vllm \
    ARPO_LEARNER_HOST=0.0.0.0 \
    ARPO_LEARNER_BACKEND=deepspeed \
    ARPO_LEARNER_DIRECTORY=/var/lib/arpo/runs
USER 10001:10001
WORKDIR /home/arpo
EXPOSE 8001 8004
HEALTHCHECK --interval=15s --timeout=10s --start-period=600s --retries=3 \
    CMD ["python", "-m", "arpo.services.health"]
CMD ["python", "-m", "arpo.services.rollout"]
