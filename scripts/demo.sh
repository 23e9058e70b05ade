#!/usr/bin/env bash
# The main job: install, then an embedded ARPO run on CPU: the shipped tiny agent on the project's agentic
# benchmark, with held-out validation (configs/runs/agentic.yaml; arguments go to `arpo run`, e.g. --steps 5).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh"
exec "${ARPO_VENV:-$ROOT/.venv}/bin/arpo" run "$ROOT/configs/runs/agentic.yaml" "$@"
