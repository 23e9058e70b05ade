"""Rules that matter, as tests (STYLE.md §5, §13, §15). No allow-lists: a rule that needs one changes."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).parents[2] / "arpo"
IO_MODULES = ["redis", "valkey", "fastapi", "starlette", "httpx", "requests", "aiohttp", "vllm", "deepspeed"]
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def test_core_imports_no_io() -> None:
    code = (
        "import importlib, json, pkgutil, sys\n"
        "import arpo.core\n"
        "for m in pkgutil.iter_modules(arpo.core.__path__):\n"
        "    importlib.import_module('arpo.core.' + m.name)\n"
        f"print(json.dumps(sorted(n for n in {IO_MODULES!r} if n in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_core_modules_import_only_core_and_libraries() -> None:
    for path in (PACKAGE / "core").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("arpo"):
                assert node.module.startswith("arpo.core"), f"{path.name} imports {node.module}"


def test_module_and_function_sizes() -> None:
    too_long = []
    for path in PACKAGE.rglob("*.py"):
        source = path.read_text()
        rel = path.relative_to(PACKAGE.parent)
        if len(source.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{rel}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{rel}:{node.lineno} {node.name}(): {length} lines")
    assert not too_long


def test_no_print_outside_the_cli() -> None:
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert not offenders
