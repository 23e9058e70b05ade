"""Every Redis key the platform uses, one function each (DESIGN.md §5).

All keys of a run share the hash tag `{run_id}`, so on Redis Cluster they live in one slot and Lua
scripts may touch several of them atomically. Ids are checked here: a key can never be forged from an
id holding `:`, braces or whitespace.
"""

from __future__ import annotations

import re

PREFIX = "arpo"
_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")


def _id(name: str, value: str) -> str:
    if not _ID.fullmatch(value):
        raise ValueError(f"{name} must be 1-128 of [A-Za-z0-9_.-], got {value!r}")
    return value


def _run(run_id: str) -> str:
    return f"{PREFIX}:{{{_id('run_id', run_id)}}}"


def runs_index() -> str:
    """Sorted set of run ids by creation time."""
    return f"{PREFIX}:runs"


def run_spec(run_id: str) -> str:
    """String: the RunSpec JSON."""
    return f"{_run(run_id)}:spec"


def run_status(run_id: str) -> str:
    """String: the RunStatus JSON."""
    return f"{_run(run_id)}:status"


def run_metrics(run_id: str) -> str:
    """Stream: one StepMetrics JSON per step."""
    return f"{_run(run_id)}:metrics"


def run_validation(run_id: str) -> str:
    """Stream: one ValidationMetrics JSON per validated policy version."""
    return f"{_run(run_id)}:validation"


def run_events(run_id: str) -> str:
    """Stream: state changes and log lines for the events endpoint."""
    return f"{_run(run_id)}:events"


def run_keys_pattern(run_id: str) -> str:
    """SCAN pattern matching every key of a run (for deletion)."""
    return f"{_run(run_id)}:*"


def branch_stream(run_id: str) -> str:
    """Stream of BranchRequest messages."""
    return f"{_run(run_id)}:branch"


def branch_group(run_id: str) -> str:
    """Consumer group of the agent workers on the branch stream."""
    return f"{PREFIX}-agents-{_id('run_id', run_id)}"


def dead_letter_stream(run_id: str) -> str:
    """Stream of BranchRequests that failed max_attempts times."""
    return f"{_run(run_id)}:dead"


def tree_meta(run_id: str, step: int, tree_id: str) -> str:
    """Hash: a tree's budget counters (size, started, finished, dead), state, answers, and the markers
    that make fork admissions (`fork:<node>`) and dead letters (`dead:<request>`) count once."""
    return f"{_run(run_id)}:tree:{_step(step)}:{_id('tree_id', tree_id)}:meta"


def tree_nodes(run_id: str, step: int, tree_id: str) -> str:
    """Hash: node id -> TreeNode JSON."""
    return f"{_run(run_id)}:tree:{_step(step)}:{_id('tree_id', tree_id)}:nodes"


def tree_leaves(run_id: str, step: int, tree_id: str) -> str:
    """Hash: leaf node id -> Trajectory JSON (one per finished trajectory)."""
    return f"{_run(run_id)}:tree:{_step(step)}:{_id('tree_id', tree_id)}:leaves"


def agent_stats(run_id: str) -> str:
    """Hash: counters summed over the run's agent workers (started, acked, reclaimed, lost, failed, dead)."""
    return f"{_run(run_id)}:agent:stats"


def completed_trees(run_id: str) -> str:
    """Stream of completed trees (run, step, tree id) for the learner."""
    return f"{_run(run_id)}:completed"


def weights_version(run_id: str) -> str:
    """String: the latest published policy version."""
    return f"{_run(run_id)}:weights:version"


def learner_lease(run_id: str) -> str:
    """String with TTL: the learner that owns the run."""
    return f"{_run(run_id)}:learner"


def _step(step: int) -> str:
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return str(step)


def search_cache(backend: str, digest: str) -> str:
    """String: cached search hits (JSON) of one backend + normalized query; expires after the TTL."""
    return f"{PREFIX}:search:{_id('backend', backend)}:{_id('digest', digest)}"
