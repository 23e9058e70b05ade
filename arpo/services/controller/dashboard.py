"""The dashboard's server side: its static pages, runs' curves as a PNG, and trees laid out for the viewer.

The pages (`static/`: HTML, one JavaScript module, CSS; no build step, no CDN) call the same API with
the same bearer token. Curves are drawn here (`arpo.plots.run_curves`, matplotlib) so the browser needs
no charting code: `GET /v1/runs/{id}/curves.png?compare=OTHER` overlays a second run (ARPO vs GRPO).
`GET /v1/runs/{id}/trees/{step}/view` decodes every token with the run's tokenizer and adds what the
viewer shows beside it: per-token entropy, tool calls and results, branch points, leaf rewards and
advantages (GRPO within the tree; a node's is the mean of the leaves below it).
"""

from __future__ import annotations

import asyncio
import functools
import io
import logging
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI
from fastapi import Path as PathParam
from fastapi.params import Depends
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from redis.asyncio import Redis

from arpo.builtins import resolve_model
from arpo.core.advantages import leaf_advantages, node_advantages
from arpo.plots import Curves, run_curves
from arpo.proto.base import Id
from arpo.proto.runs import ModelRef
from arpo.proto.tree import Tree
from arpo.proto.views import LeafView, NodeView, TokenView, TreeView
from arpo.services.agent.store import TreeStore
from arpo.services.controller.registry import RunRegistry

STATIC = Path(__file__).parent / "static"
RunId = Annotated[Id, PathParam(description="The run's id.")]
log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=8)
def _tokenizer(name: str, revision: str | None) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model(name), revision=revision)


def _pieces(model: ModelRef) -> Any:
    """token id -> text, with the run's tokenizer; `<id>` when it cannot be loaded (offline, say)."""
    try:
        tokenizer = _tokenizer(model.name_or_path, model.revision)
    except Exception as err:  # the viewer still works, with ids instead of text
        log.warning("tokenizer of %s unavailable (%s): showing token ids", model.name_or_path, err)
        return lambda token_id: f"<{token_id}>"
    return lambda token_id: str(tokenizer.decode([token_id]))


def tree_view(tree: Tree, piece: Any) -> TreeView:
    core = tree.to_core()
    rewards = {t.leaf_node_id: t.reward or 0.0 for t in tree.trajectories}
    leaf_adv = leaf_advantages(core, rewards)
    node_adv = node_advantages(core, leaf_adv)
    children: dict[str, int] = {}
    for node in tree.nodes:
        if node.parent_id is not None:
            children[node.parent_id] = children.get(node.parent_id, 0) + 1
    nodes = []
    for n in tree.nodes:
        trained = [h for h, m in zip(n.entropies, n.loss_mask, strict=True) if m]
        result = n.tool_result
        nodes.append(
            NodeView(
                node_id=n.node_id,
                parent_id=n.parent_id,
                tokens=[
                    TokenView(text=piece(t), entropy=h, trained=bool(m))
                    for t, h, m in zip(n.token_ids, n.entropies, n.loss_mask, strict=True)
                ],
                tool=n.tool_call.tool if n.tool_call else None,
                tool_input=n.tool_call.content if n.tool_call else None,
                tool_output=(result.output or result.error or "") if result else None,
                children=children.get(n.node_id, 0),
                forked=n.forked,
                delta_h=n.delta_h,
                entropy_mean=sum(trained) / len(trained) if trained else None,
                advantage=node_adv.get(n.node_id),
            )
        )
    leaves = [
        LeafView(
            leaf_node_id=t.leaf_node_id,
            reward=t.reward,
            advantage=leaf_adv[t.leaf_node_id],
            answer=t.answer,
            score=t.score,
            tool_calls=t.tool_calls,
        )
        for t in tree.trajectories
    ]
    return TreeView(
        tree_id=tree.tree_id,
        prompt_id=tree.prompt_id,
        step=tree.step,
        budget=tree.budget,
        nodes=nodes,
        leaves=leaves,
        branch_points=sum(1 for c in children.values() if c >= 2),
    )


def mount_dashboard(app: FastAPI, redis: Redis, registry: RunRegistry, auth: list[Depends]) -> None:
    app.mount("/dashboard", StaticFiles(directory=STATIC, html=True), name="dashboard")

    @app.get("/", include_in_schema=False)
    async def home() -> RedirectResponse:
        return RedirectResponse("/dashboard/")

    @app.get("/v1/runs/{run_id}/curves.png", dependencies=auth, response_class=Response)
    async def curves(run_id: RunId, compare: Id | None = None) -> Response:
        """The run's learning curves as a PNG; `compare` overlays another run (ARPO vs GRPO)."""
        runs: dict[str, Curves] = {}
        for rid in [run_id] if compare is None else [run_id, compare]:
            status = await registry.get(rid)
            label = f"{status.name} ({rid})" if status.name else rid
            runs[label] = (await registry.metrics(rid), await registry.validation(rid))
        buffer = io.BytesIO()
        await asyncio.to_thread(run_curves, runs, buffer)
        return Response(buffer.getvalue(), media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.get("/v1/runs/{run_id}/trees/{step}/view", dependencies=auth)
    async def trees_view(run_id: RunId, step: Annotated[int, PathParam(ge=0)]) -> list[TreeView]:
        """The step's completed trees laid out for the viewer (tokens decoded, advantages computed)."""
        spec = await registry.spec(run_id)
        trees = await TreeStore(redis, run_id).completed_trees(step)
        piece = await asyncio.to_thread(_pieces, spec.model)
        return [tree_view(t, piece) for t in trees]
