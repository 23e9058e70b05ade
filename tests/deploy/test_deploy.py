"""deploy/ and docker-compose.yml, checked statically against the code they run.

No Docker engine or cluster runs here, so: the compose file against the Compose Specification schema,
the rendered kustomize overlays against the Kubernetes schemas (offline, strict), the Dockerfiles
through hadolint, and every service's command, port, health path and `ARPO_*` variables against the
service's own settings class (a misspelt variable, a port that differs from the one the code listens
on, or a value the settings reject fails here). The processes behind these commands are started for
real by tests/integration/test_processes.py.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from arpo.services.agent.settings import AgentSettings
from arpo.services.controller.settings import ControllerSettings
from arpo.services.learner.settings import LearnerSettings
from arpo.services.rollout.settings import RolloutSettings
from arpo.services.tools.settings import ToolsSettings

ROOT = Path(__file__).parents[2]
BIN = Path(sys.executable).parent
SETTINGS: dict[str, Any] = {
    "rollout": RolloutSettings,
    "tools": ToolsSettings,
    "agent": AgentSettings,
    "learner": LearnerSettings,
    "controller": ControllerSettings,
}
OVERLAYS = ("cpu-dev", "gpu")
GPU_SERVICES = {"rollout", "learner"}
INTERPOLATION = re.compile(r"\$\{(\w+)(?::([-?])([^}]*))?\}")


def _tool(name: str) -> str:
    path = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[dev]' (scripts/test.sh does)")
    return path


def _interpolate(value: Any) -> str:
    """A compose value with `${VAR:-default}` -> default and `${VAR:?error}` -> a placeholder that
    satisfies the field (required settings have no default on purpose)."""
    return INTERPOLATION.sub(lambda m: m[3] if m[2] == "-" else "required-value-0123456789", str(value))


@cache
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def arpo_services() -> Iterator[tuple[str, dict[str, Any], str]]:
    """(compose name, service, arpo module) for every service that runs arpo."""
    for name, service in compose()["services"].items():
        command = service.get("command", [])
        if command[:2] == ["python", "-m"]:
            yield name, service, command[2].removeprefix("arpo.services.")


def _settings(module: str, env: dict[str, str]) -> Any:
    """The service's settings exactly as it would read them from this environment."""
    cls = SETTINGS[module]
    prefix = f"ARPO_{module.upper()}_"
    for key in env:
        if key.startswith(prefix):
            field = key.removeprefix(prefix).lower()
            assert field in cls.model_fields, f"{key}: {module} has no setting {field!r}"
    return cls.from_env(env)


# --- docker compose -------------------------------------------------------------------------------


def test_compose_file_follows_the_compose_specification() -> None:
    command = [_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", "docker-compose.yml"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_compose_service_runs_its_module_with_settings_the_code_accepts() -> None:
    ports = {}
    for name, service, module in arpo_services():
        assert importlib.util.find_spec(f"arpo.services.{module}.__main__"), name
        env = {k: _interpolate(v) for k, v in service["environment"].items()}
        assert env["ARPO_SERVICE"] == module, f"{name}: the health check would probe the wrong service"
        settings = _settings(module, env)
        assert settings.port is not None, f"{name}: no port, so no /healthz"
        assert settings.host == "0.0.0.0" or f"ARPO_{module.upper()}_HOST" not in env
        ports[module] = settings.port
        assert service["healthcheck"]["test"] == ["CMD", "python", "-m", "arpo.services.health"], name
        assert service["read_only"] and service["cap_drop"] == ["ALL"], name
    assert set(ports) == set(SETTINGS)  # every service of the platform is deployed
    for name, service, _module in arpo_services():
        for key, url in service["environment"].items():
            if key.endswith(("_ROLLOUT_URLS", "_TOOLS_URL")):
                target = "rollout" if "ROLLOUT" in key else "tools"
                assert url == f"http://{target}:{ports[target]}", f"{name}: {key}={url}"
    controller = compose()["services"]["controller"]
    assert controller["ports"] == ["${ARPO_CONTROLLER_PUBLISH:-127.0.0.1:8000}:" + str(ports["controller"])]


def test_compose_waits_for_healthy_dependencies_and_requires_what_has_no_default() -> None:
    services = compose()["services"]
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert condition["condition"] == "service_healthy", f"{name} -> {dependency}"
            assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"
    text = (ROOT / "docker-compose.yml").read_text()
    assert "${ARPO_CONTROLLER_TOKEN:?" in text and "${ARPO_MODEL:?" in text
    redis = services["redis"]
    assert "--appendonly" in redis["command"] and redis["volumes"] == ["redis-data:/data"]


def test_the_profiles_give_one_complete_stack_each_with_gpus_only_where_used() -> None:
    for profile in ("gpu", "cpu"):
        active = {
            name: s for name, s in compose()["services"].items() if profile in s.get("profiles", [profile])
        }
        modules = sorted(m for n, s, m in arpo_services() if n in active)
        assert modules == sorted(SETTINGS), profile  # each service once: the topology of test_processes
        for name, service in active.items():
            module = service.get("command", ["", "", ""])[2].removeprefix("arpo.services.")
            wants_gpu = "devices" in str(service.get("deploy", {}))
            assert wants_gpu == (profile == "gpu" and module in GPU_SERVICES), name
    rollout_cpu = compose()["services"]["rollout-cpu"]
    assert rollout_cpu["networks"]["default"]["aliases"] == ["rollout"]  # agents reach either as `rollout`
    learner_dirs = {
        s["environment"]["ARPO_LEARNER_DIRECTORY"] for n, s, m in arpo_services() if m == "learner"
    }
    for _name, service, module in arpo_services():
        if module in GPU_SERVICES:  # weights published by the learner are read by the rollout servers
            assert "runs:/var/lib/arpo" in " ".join(service["volumes"])
    assert learner_dirs == {"/var/lib/arpo/runs"}


# --- Dockerfiles ----------------------------------------------------------------------------------


@pytest.mark.parametrize("image", ["cpu", "gpu"])
def test_dockerfiles_pass_hadolint_and_run_as_a_non_root_service(image: str) -> None:
    path = ROOT / "deploy" / "docker" / f"{image}.Dockerfile"
    result = subprocess.run([_tool("hadolint"), str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    text = path.read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2  # multi-stage: no compilers in the runtime image
    assert re.search(r"^USER 10001", text, re.M)
    assert "HEALTHCHECK" in text and '"arpo.services.health"' in text
    service = re.search(r"ARPO_SERVICE=(\w+)", text)
    assert service is not None
    assert f'CMD ["python", "-m", "arpo.services.{service[1]}"]' in text
    assert "torch==" in text or "vllm==" in text  # pinned


def test_dockerignore_sends_only_the_package() -> None:
    lines = (ROOT / ".dockerignore").read_text().split()
    assert lines[lines.index("*")] == "*" and {"!arpo/", "!pyproject.toml", "!README.md"} <= set(lines)


# --- Kubernetes -----------------------------------------------------------------------------------


@cache
def rendered(overlay: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    kustomize = shutil.which("kustomize")
    if kubectl is None and kustomize is None:
        pytest.fail("kubectl (with its built-in kustomize) or kustomize is needed to render deploy/k8s")
    command = [kubectl, "kustomize"] if kubectl else [str(kustomize), "build"]
    path = ROOT / "deploy" / "k8s" / "overlays" / overlay
    result = subprocess.run([*command, str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _named(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_validates_against_the_kubernetes_schemas(overlay: str, tmp_path: Path) -> None:
    docs = rendered(overlay)
    out = tmp_path / f"{overlay}.yaml"
    out.write_text(yaml.safe_dump_all(docs))
    command = [_tool("kubernetes-validate"), "--strict", "--quiet", str(out)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {"arpo"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workloads_run_their_module_locked_down_with_probes_on_the_port_the_code_serves(overlay: str) -> None:
    docs = rendered(overlay)
    config = {name: cm.get("data", {}) for name, cm in _named(docs, "ConfigMap").items()}
    workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Job")]
    seen = set()
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        name = workload["metadata"]["name"]
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            assert {"requests", "limits"} <= set(container["resources"]), name
            gpus = "nvidia.com/gpu" in container["resources"]["limits"]
            assert gpus == (overlay == "gpu" and name in GPU_SERVICES), name
            if name == "redis":
                continue
            module = container["command"][2].removeprefix("arpo.services.")
            env = {
                k: v for ref in container["envFrom"] for k, v in config[ref["configMapRef"]["name"]].items()
            }
            env |= {e["name"]: "secret-from-kubernetes-0123" for e in container.get("env", [])}
            assert env["ARPO_SERVICE"] == module, name
            settings = _settings(module, env)
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            assert list(ports.values()) == [settings.port] and settings.host == "0.0.0.0", name
            probes = [
                container[p] for p in ("readinessProbe", "livenessProbe", "startupProbe") if p in container
            ]
            assert probes and "livenessProbe" in container, name
            for probe in probes:
                assert probe["httpGet"]["path"] == "/healthz" and probe["httpGet"]["port"] in ports, name
            seen.add(module)
    assert seen == set(SETTINGS)
    assert set(_named(docs, "Job")) == {"learner"}  # kinds as the design says
    assert _named(docs, "StatefulSet")["redis"]["spec"]["volumeClaimTemplates"]
    assert config["learner-config"]["ARPO_LEARNER_MAX_RUNS"] == "1"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rollout_replica_gets_weights_and_requests(overlay: str) -> None:
    docs = rendered(overlay)
    rollout = _named(docs, "StatefulSet")["rollout"]
    replicas = rollout["spec"]["replicas"]
    expected = ",".join(f"http://rollout-{i}.rollout:8001" for i in range(replicas))
    config = _named(docs, "ConfigMap")
    assert config["learner-config"]["data"]["ARPO_LEARNER_ROLLOUT_URLS"] == expected
    assert config["agent-config"]["data"]["ARPO_AGENT_ROLLOUT_URLS"] == expected
    assert _named(docs, "Service")["rollout"]["spec"]["clusterIP"] == "None"  # stable per-pod names
    budget = _named(docs, "PodDisruptionBudget")["rollout"]["spec"]
    assert budget["selector"]["matchLabels"] == {"app": "rollout"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_tools_and_agents_autoscale_and_the_tool_pods_are_fenced(overlay: str) -> None:
    docs = rendered(overlay)
    scalers = {
        h["spec"]["scaleTargetRef"]["name"]: h["spec"]
        for h in _named(docs, "HorizontalPodAutoscaler").values()
    }
    assert set(scalers) == {"tools", "agent"}
    for spec in scalers.values():
        assert spec["minReplicas"] < spec["maxReplicas"]
        assert spec["metrics"][0]["resource"]["name"] == "cpu"
    policies = [p["spec"] for p in _named(docs, "NetworkPolicy").values()]
    tools = [p for p in policies if p["podSelector"]["matchLabels"] == {"app": "tools"}]
    assert tools and all("Egress" in p["policyTypes"] for p in tools)
    allowed = [rule for p in tools for rule in p.get("egress", [])]
    ports = {port["port"] for rule in allowed for port in rule.get("ports", [])}
    assert ports == ({53, 6379, 443} if overlay == "gpu" else {53, 6379})  # no web egress with local search
    cluster = [b["ipBlock"] for rule in allowed for b in rule["to"] if "ipBlock" in b]
    assert all("10.0.0.0/8" in block["except"] for block in cluster)  # web search, never the cluster
