#!/usr/bin/env bash
# The main job: install, then run the embedded ARPO demo on CPU (arguments go to `arpo demo`).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh"
exec "${ARPO_VENV:-$ROOT/.venv}/bin/arpo" demo "$@"
