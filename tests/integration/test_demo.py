"""The README's main job for this milestone runs end to end through the installed `arpo` command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_demo_runs_and_the_update_moves_the_policy_the_right_way() -> None:
    arpo = Path(sys.executable).parent / "arpo"  # the console script installed beside this interpreter
    assert arpo.is_file(), "the arpo console script is not installed"
    out = subprocess.run([str(arpo), "demo", "--prompts", "4"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "tool calls executed per trajectory" in out.stdout
    assert "-> ok" in out.stdout
