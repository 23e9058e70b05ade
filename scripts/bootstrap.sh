#!/usr/bin/env bash
# Create .venv (Python >= 3.11) and install arpo with its dev tools into it.
# Idempotent: reinstalls only when pyproject.toml or the torch pin changed.
#
#   ARPO_VENV=/path          virtual environment to use (default: .venv in the repository)
#   ARPO_TORCH_SPEC=...      torch requirement installed first (default: torch==2.13.0, the CPU wheel
#                            these machines carry; on a GPU host use e.g. 'torch==2.13.0' from the CUDA index)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ARPO_VENV:-$ROOT/.venv}"
TORCH_SPEC="${ARPO_TORCH_SPEC:-torch==2.13.0}"

find_python() {
    for candidate in python3.13 python3.12 python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    echo "bootstrap: need Python >= 3.11 on PATH (python3.11, python3.12, python3.13 or python3)" >&2
    return 1
}

# The tool sandbox's namespaces come from bubblewrap: installed when we can (root with apt-get); otherwise
# the tool service refuses to start and says how to get it (or runs with ARPO_TOOLS_ISOLATION=rlimits).
bash "$ROOT/scripts/apt-install.sh" bwrap bubblewrap "the tool sandbox"

if [ ! -x "$VENV/bin/python" ]; then
    PY="$(find_python)"
    echo "bootstrap: creating $VENV with $("$PY" --version)" >&2
    "$PY" -m venv "$VENV"
fi

STAMP="$VENV/.arpo-install"
WANT="$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16) $TORCH_SPEC"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
    echo "bootstrap: installing $TORCH_SPEC and arpo[dev] into $VENV (first run takes a few minutes)" >&2
    # torch first, pinned, so no dependency resolves it to a multi-GB CUDA build on a CPU machine.
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$TORCH_SPEC"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT[dev]"
    echo "$WANT" >"$STAMP"
fi
