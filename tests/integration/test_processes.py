"""The deployment topology without Docker: every service its own OS process on loopback ports.

Redis, rollout, tools, two agent workers, a learner and the controller, each started exactly as its
container starts it (`python -m arpo.services.<name>` with ARPO_* variables). A run is submitted through
REST, trains two steps, is stopped through REST, and its status, metrics and trees are checked.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from arpo.localredis import free_port, start_server

ROOT = Path(__file__).parents[2]
TOKEN = "process-test-token-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SPEC: dict[str, Any] = {
    "name": "processes",
    "model": {"name_or_path": "arpo:tiny", "dtype": "float32"},
    "dataset": {"path_or_name": "arpo:arith", "metric": "exact_match"},
    "config": {
        "rollout": {"max_response_tokens": 24, "max_tool_calls": 1},
        "branching": {"group_size": 4, "initial_rollouts": 2, "entropy_window": 4},
        "optim": {"lr": 1e-4, "batch_prompts": 2, "mini_batch_prompts": 2, "total_steps": 50},
    },
}


class Services:
    def __init__(self, redis_url: str, directory: Path) -> None:
        self.redis_url, self.directory = redis_url, directory
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}
        self.envs: dict[str, dict[str, str]] = {}

    def start(self, name: str, module: str, env: dict[str, str]) -> None:
        log = self.directory / f"{name}.log"
        self.logs[name] = log
        self.envs[name] = env
        full = os.environ | {"REDIS_URL": self.redis_url, "OMP_NUM_THREADS": "1"} | env
        with log.open("wb") as out:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", f"arpo.services.{module}"], env=full, cwd=ROOT, stdout=out, stderr=out
            )

    def wait_healthy(self, url: str, name: str, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.procs[name].poll() is not None:
                raise AssertionError(f"{name} exited:\n{self.logs[name].read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"{name} not healthy after {timeout_s}s:\n{self.logs[name].read_text()[-3000:]}")

    def tail(self) -> str:
        return "\n".join(f"== {n}\n{p.read_text()[-1500:]}" for n, p in self.logs.items())

    def close(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def services(tmp_path: Path) -> Iterator[tuple[Services, dict[str, str]]]:
    """Every service, with a Redis of their own (as docker compose gives them: no other runs in it)."""
    redis = start_server()
    s = Services(redis.url, tmp_path)
    names = ("rollout", "tools", "controller", "agent-0", "agent-1", "learner")
    ports = {name: free_port() for name in names}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    try:
        s.start(
            "controller",
            "controller",
            {"ARPO_CONTROLLER_TOKEN": TOKEN, "ARPO_CONTROLLER_PORT": str(ports["controller"])},
        )
        s.start(
            "rollout",
            "rollout",
            {
                "ARPO_ROLLOUT_MODEL": "arpo:tiny",
                "ARPO_ROLLOUT_DTYPE": "float32",
                "ARPO_ROLLOUT_DEVICE": "cpu",
                "ARPO_ROLLOUT_PORT": str(ports["rollout"]),
            },
        )
        s.start(
            "tools",
            "tools",
            {
                "ARPO_TOOLS_PORT": str(ports["tools"]),
                "ARPO_TOOLS_ISOLATION": "auto",
                "ARPO_TOOLS_INDEX": "arpo:facts",
            },
        )
        for name in ("controller", "rollout", "tools"):
            s.wait_healthy(urls[name], name)
        for i in range(2):
            s.start(
                f"agent-{i}",
                "agent",
                {
                    "ARPO_AGENT_ROLLOUT_URLS": urls["rollout"],
                    "ARPO_AGENT_TOOLS_URL": urls["tools"],
                    "ARPO_AGENT_CONSUMER": f"w{i}",
                    "ARPO_AGENT_POLL_S": "0.3",
                    "ARPO_AGENT_GRACE_S": "2",
                    "ARPO_AGENT_PORT": str(ports[f"agent-{i}"]),
                },
            )
        s.start(
            "learner",
            "learner",
            {
                "ARPO_LEARNER_ROLLOUT_URLS": urls["rollout"],
                "ARPO_LEARNER_DIRECTORY": str(tmp_path / "runs"),
                "ARPO_LEARNER_NAME": "learner-0",
                "ARPO_LEARNER_POLL_S": "0.3",
                "ARPO_LEARNER_PORT": str(ports["learner"]),
            },
        )
        for name in ("agent-0", "agent-1", "learner"):
            s.wait_healthy(urls[name], name)
        yield s, urls
    finally:
        s.close()
        redis.close()


def test_a_run_through_rest_across_processes(services: tuple[Services, dict[str, str]]) -> None:
    s, urls = services
    api = httpx.Client(base_url=urls["controller"], headers=AUTH, timeout=30)
    run_id = api.post("/v1/runs", json=SPEC).raise_for_status().json()["run_id"]
    try:
        deadline = time.monotonic() + 240
        while (status := api.get(f"/v1/runs/{run_id}").json())["step"] < 2:
            assert status["state"] in ("pending", "running"), f"{status}\n{s.tail()}"
            assert time.monotonic() < deadline, f"no 2 steps in time: {status}\n{s.tail()}"
            time.sleep(0.5)
        assert api.post(f"/v1/runs/{run_id}/stop").json()["state"] == "stopping"
        while (status := api.get(f"/v1/runs/{run_id}").json())["state"] == "stopping":
            assert time.monotonic() < deadline, f"did not stop: {status}\n{s.tail()}"
            time.sleep(0.5)
        assert status["state"] == "finished", s.tail()
        assert status["reason"] == f"stopped after step {status['step']}" and status["step"] >= 2
        assert {"learner-0", "agent-w0", "agent-w1"} <= set(status["services_seen"])
        assert status["policy_version"] == status["step"]
        steps = api.get(f"/v1/runs/{run_id}/metrics").json()
        assert [m["step"] for m in steps] == list(range(status["step"]))
        assert all(m["trees"] == 2 and m["trajectories"] == 8 for m in steps)
        trees = api.get(f"/v1/runs/{run_id}/trees/0").json()
        assert len(trees) == 2 and all(len(t["trajectories"]) == 4 for t in trees)
        learner = httpx.get(f"{urls['learner']}/healthz").json()
        assert learner == {"service": "learner", "status": "ok", "name": "learner-0", "run_id": None} | {
            "step": None
        }
        health = httpx.get(f"{urls['rollout']}/healthz").json()
        assert health["policy_version"] == status["policy_version"]  # the learner's weights are served
        events = api.get(f"/v1/runs/{run_id}/events").text  # follows until the run ended: it has
        assert events.count("event: metrics") == status["step"]
    finally:
        state = api.get(f"/v1/runs/{run_id}").json()["state"]
        if state in ("finished", "failed"):
            api.delete(f"/v1/runs/{run_id}")
        api.close()


def test_every_service_passes_its_container_health_check(services: tuple[Services, dict[str, str]]) -> None:
    """The images' HEALTHCHECK (`python -m arpo.services.health`) against each running service, with the
    environment that service was started with."""
    s, urls = services
    agent = httpx.get(f"{urls['agent-0']}/healthz").json()
    assert agent == {"service": "agent", "status": "ok", "consumer": "w0", "run_id": None, "inflight": 0}
    modules = {"controller": "controller", "rollout": "rollout", "tools": "tools", "learner": "learner"}
    for name, module in (modules | {"agent-1": "agent"}).items():
        env = os.environ | s.envs[name] | {"ARPO_SERVICE": module}
        command = [sys.executable, "-m", "arpo.services.health"]
        check = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, f"{name}: {check.stdout}{check.stderr}"
        assert check.stdout.startswith("200 ")
    s.procs["agent-1"].terminate()
    s.procs["agent-1"].wait(30)
    env = os.environ | s.envs["agent-1"]
    check = subprocess.run(
        [sys.executable, "-m", "arpo.services.health", "agent"], env=env, capture_output=True, text=True
    )
    assert check.returncode == 1 and "agent on port" in check.stderr


def test_a_learner_job_trains_one_run_and_exits(tmp_path: Path) -> None:
    """ARPO_LEARNER_MAX_RUNS=1 (the Kubernetes Job): the learner claims one run, and after it ended
    (here: failed, its dataset missing) exits 0 instead of claiming the next one."""
    import asyncio

    from redis.asyncio import Redis

    from arpo.proto.runs import RunSpec
    from arpo.services.controller.registry import RunRegistry

    redis = start_server()
    bad = SPEC | {"dataset": {"path_or_name": str(tmp_path / "missing.jsonl"), "metric": "exact_match"}}

    async def submit() -> list[str]:
        client = Redis.from_url(redis.url)
        registry = RunRegistry(client)
        ids = [(await registry.create(RunSpec.model_validate(bad))).run_id for _ in range(2)]
        await client.aclose()
        return ids

    async def states(ids: list[str]) -> list[str]:
        client = Redis.from_url(redis.url)
        registry = RunRegistry(client)
        out = [(await registry.get(i)).state.value for i in ids]
        await client.aclose()
        return out

    try:
        first, second = asyncio.run(submit())
        env = os.environ | {
            "REDIS_URL": redis.url,
            "ARPO_LEARNER_MAX_RUNS": "1",
            "ARPO_LEARNER_ROLLOUT_URLS": "",
            "ARPO_LEARNER_DIRECTORY": str(tmp_path / "runs"),
            "ARPO_LEARNER_POLL_S": "0.2",
        }
        command = [sys.executable, "-m", "arpo.services.learner"]
        learner = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert learner.returncode == 0, learner.stderr[-3000:]
        assert asyncio.run(states([first, second])) == ["failed", "pending"]
    finally:
        redis.close()
