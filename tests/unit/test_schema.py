"""The committed top-level proto/ folder is exactly what the models export."""

from __future__ import annotations

import json
from pathlib import Path

from arpo.proto.schema import MESSAGES, export_schemas, schema_documents
from arpo.services.openapi import openapi_documents

PROTO = Path(__file__).parents[2] / "proto"


def test_committed_schemas_match_the_models() -> None:
    docs = {**schema_documents(), **openapi_documents()}
    committed = {p.name: p.read_text() for p in [*PROTO.glob("*.schema.json"), *PROTO.glob("*.openapi.json")]}
    assert sorted(committed) == sorted(docs), "run `arpo schema export proto` and commit the result"
    drifted = [name for name, text in docs.items() if committed[name] != text]
    assert not drifted, f"schemas drifted from the models: {drifted}; run `arpo schema export proto`"


def test_every_field_is_documented() -> None:
    undocumented = []
    for model in MESSAGES:
        for name, field in model.model_fields.items():
            if not field.description:
                undocumented.append(f"{model.__name__}.{name}")
    assert not undocumented


def test_export_removes_stale_files(tmp_path: Path) -> None:
    (tmp_path / "Gone.schema.json").write_text("{}")
    (tmp_path / "README.md").write_text("kept")
    documents = openapi_documents()
    written = export_schemas(tmp_path, documents)
    assert len(written) == len(MESSAGES) + len(documents) == len(MESSAGES) + 3
    rollout = json.loads((tmp_path / "rollout.openapi.json").read_text())
    assert {"/v1/generate", "/v1/weights", "/v1/completions", "/v1/chat/completions"} <= set(rollout["paths"])
    tools = json.loads((tmp_path / "tools.openapi.json").read_text())
    assert {"/v1/python", "/v1/search", "/v1/batch", "/healthz", "/metrics"} <= set(tools["paths"])
    controller = json.loads((tmp_path / "controller.openapi.json").read_text())
    assert {"/v1/runs", "/v1/runs/{run_id}/stop", "/v1/runs/{run_id}/events"} <= set(controller["paths"])
    assert not (tmp_path / "Gone.schema.json").exists() and (tmp_path / "README.md").exists()
    tree = json.loads((tmp_path / "Tree.schema.json").read_text())
    assert tree["additionalProperties"] is False
