"""The `arpo` command: help lists every subcommand; config and schema commands; eval names what is missing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from arpo.cli import app

runner = CliRunner()


def test_help_lists_subcommands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in ("run", "serve", "sft", "eval", "bench", "analyze", "demo", "schema", "config"):
        assert name in result.output


def test_eval_names_its_missing_options() -> None:
    result = runner.invoke(app, ["eval"])
    assert result.exit_code == 2
    assert "--model" in result.output


def test_config_check_and_show(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("branching: {group_size: 4, initial_rollouts: 4}\n")
    result = runner.invoke(app, ["config", "check", str(good)])
    assert result.exit_code == 0 and "GRPO" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("branching: {alpha: 7}\n")
    result = runner.invoke(app, ["config", "check", str(bad)])
    assert result.exit_code == 2
    assert "branching.alpha" in result.output and "7" in result.output
    shown = runner.invoke(app, ["config", "show", "--json"])
    assert shown.exit_code == 0 and '"group_size": 16' in shown.output


def test_schema_export(tmp_path: Path) -> None:
    result = runner.invoke(app, ["schema", "export", str(tmp_path / "out")])
    assert result.exit_code == 0
    assert (tmp_path / "out" / "BranchRequest.schema.json").is_file()


def test_index_build(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"id": "a", "title": "Alpha", "text": "first letter"}\n')
    result = runner.invoke(app, ["index", "build", str(corpus), str(tmp_path / "index")])
    assert result.exit_code == 0 and "indexed 1 documents" in result.output
    assert (tmp_path / "index" / "arpo-index.json").is_file()
    corpus.write_text('{"id": "a", "title": "Alpha"}\n')
    result = runner.invoke(app, ["index", "build", str(corpus), str(tmp_path / "index2")])
    assert result.exit_code == 2 and "field 'text' must be a string" in result.output
    missing = runner.invoke(app, ["index", "build", str(tmp_path / "nope.jsonl"), str(tmp_path / "i3")])
    assert missing.exit_code == 2 and "is not a file" in missing.output


def test_set_overrides_a_spec_field_and_names_a_bad_one(tmp_path: Path) -> None:
    from arpo.cli_runs import load_spec
    from arpo.config import ConfigError

    spec = Path("configs/runs/agentic.yaml")
    parsed = load_spec(spec, ["config.branching.beta=0.5", "config.branching.fork_width=2", "name=sweep"])
    assert parsed.config.branching.beta == 0.5 and parsed.config.branching.fork_width == 2
    assert parsed.name == "sweep" and parsed.config.branching.initial_rollouts == 4  # the rest as in the file
    assert load_spec(spec).config.branching.beta == 0.2
    for assignment, named in (
        ("config.branching.betta=1", "config.branching.betta"),  # typo: the schema forbids unknown fields
        ("config.branching.beta=-1", "config.branching.beta"),
        ("config.branching.initial_rollouts=9", "initial_rollouts: must be <= branching.group_size (8)"),
        ("config.seed.x=1", "config.seed is a value"),
        ("config.seed", "expected KEY=VALUE"),
    ):
        with pytest.raises(ConfigError, match=re.escape(named)):
            load_spec(spec, [assignment])


def test_compare_refuses_bad_methods_and_overrides_before_running() -> None:
    spec = "configs/runs/agentic.yaml"
    result = runner.invoke(app, ["compare", spec, "--methods", "arpo,ppo"])
    assert result.exit_code == 2 and "--methods" in result.output and "'arpo,ppo'" in result.output
    result = runner.invoke(app, ["compare", spec, "--set", "config.branching.alpha=7"])
    assert result.exit_code == 2 and "config.branching.alpha" in result.output
    result = runner.invoke(app, ["run", spec, "--set", "config.optim.lr=fast"])
    assert result.exit_code == 2 and "config.optim.lr" in result.output
