"""JSON Schema export of the contract (`arpo schema export DIR`).

The committed copy lives in the top-level `proto/` folder; a test regenerates it and fails on drift.
The services' OpenAPI documents (`arpo.services.openapi`) are written beside them by the same command.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from arpo.config import RunConfig
from arpo.proto.openai import ChatRequest, ChatResponse, CompletionRequest, CompletionResponse
from arpo.proto.rollout import (
    Completion,
    GenerateBatch,
    GenerateBatchResponse,
    GenerateRequest,
    GenerateResponse,
    ProbeSequence,
    SamplingParams,
    WeightsStatus,
    WeightsUpdate,
)
from arpo.proto.runs import (
    DatasetRef,
    ModelRef,
    RunSpec,
    RunStatus,
    StepMetrics,
    ValidationMetrics,
    ValidationSpec,
)
from arpo.proto.tools import (
    PythonRequest,
    SearchHit,
    SearchRequest,
    SearchResponse,
    ToolBatch,
    ToolBatchResponse,
    ToolCall,
    ToolResult,
)
from arpo.proto.tree import BranchRequest, Trajectory, Tree, TreeNode, TreeSeed
from arpo.proto.views import LeafView, NodeView, TokenView, TreeView

MESSAGES: tuple[type[BaseModel], ...] = (
    SamplingParams,
    GenerateRequest,
    Completion,
    GenerateResponse,
    GenerateBatch,
    GenerateBatchResponse,
    ProbeSequence,
    WeightsUpdate,
    WeightsStatus,
    ToolCall,
    ToolResult,
    SearchHit,
    PythonRequest,
    SearchRequest,
    SearchResponse,
    ToolBatch,
    ToolBatchResponse,
    BranchRequest,
    TreeSeed,
    TreeNode,
    Trajectory,
    Tree,
    ModelRef,
    DatasetRef,
    RunConfig,
    RunSpec,
    ValidationSpec,
    StepMetrics,
    ValidationMetrics,
    RunStatus,
    TokenView,
    NodeView,
    LeafView,
    TreeView,
    CompletionRequest,
    CompletionResponse,
    ChatRequest,
    ChatResponse,
)


def schema_documents() -> dict[str, str]:
    """File name -> JSON text, for every message."""
    return {
        f"{model.__name__}.schema.json": json.dumps(model.model_json_schema(), indent=2, sort_keys=True)
        + "\n"
        for model in MESSAGES
    }


def export_schemas(directory: str | Path, extra: dict[str, str] | None = None) -> list[Path]:
    """Write every schema (and `extra` documents) into `directory`, removing stale generated files."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    docs = {**schema_documents(), **(extra or {})}
    for stale in [*out.glob("*.schema.json"), *out.glob("*.openapi.json")]:
        if stale.name not in docs:
            stale.unlink()
    written = []
    for name, text in docs.items():
        path = out / name
        path.write_text(text)
        written.append(path)
    return written
