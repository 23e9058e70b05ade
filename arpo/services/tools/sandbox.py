"""Running model-written Python: confined, limited, and cleaned up after every call.

Threat model. The code is untrusted and may be hostile (it is written by a policy being trained, and
prompts can come from anywhere). What is covered, by layer:

- namespaces (bubblewrap, when the host allows it): no network (a new network namespace with only
  loopback, so neither the internet nor services on the host's 127.0.0.1, such as Redis, are reachable);
  a private pid namespace (other processes are invisible and unkillable; `/proc/1/environ` is the
  sandbox's own init); ipc and uts namespaces; a filesystem that is only the system's read-only `/usr`
  (and the interpreter's prefix) plus a private size-limited tmpfs for the work dir and `/tmp`: the
  host's files, other calls' files and the project's secrets are not there to read or overwrite.
- always: an empty environment; resource limits on CPU seconds, address space, processes, file size
  and open files; a wall-clock timeout after which the call and every process it started are killed
  (`kill(-1)` inside the pid namespace, or as the slot's own uid); stdout/stderr capped; a fresh work
  directory per call, deleted afterwards. Started as root, tool code runs as a per-slot uid (root ignores
  the process limit, and distinct uids keep one slot's fork bomb from starving another). The process
  that forks each call is non-dumpable, so the code it runs cannot ptrace it to persist across calls.

Not covered: kernel exploits (there is no seccomp filter and no gVisor-style kernel between the code and
the host), CPU and memory-bandwidth side channels, and exhausting the host's memory through many
processes each under the per-process address-space limit (use a cgroup limit for that: the container's
or the pod's). Without bubblewrap (`rlimits` mode) nothing stops network access or reading
world-readable host files: the service refuses that mode unless it is asked for explicitly.

Two paths, same confinement: fresh (a new sandbox per call) and warm (one sandbox per slot, living
across calls; each call is a forked child, and the whole sandbox is wiped and its processes killed after
each call). A slot whose sandbox died (the code killed its parent) is restarted for the next call.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import queue
import select
import shutil
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from arpo.proto.tools import ToolResult
from arpo.services.tools.settings import IsolationMode, ToolsSettings

RUNNER = (Path(__file__).parent / "runner.py").read_text()
GRACE_S = 5.0
"""How much longer than a call's timeout the service waits for its sandbox to answer."""
WORKDIR = "/work"
PRELOAD = ["_ast", "traceback", "math", "cmath", "re", "json", "collections", "itertools", "functools"]
PRELOAD += ["fractions", "decimal", "statistics", "random", "datetime", "string", "heapq", "bisect"]
"""Imported once by each warm sandbox, before it forks calls (the standard library's usual suspects)."""
SIGNALS = {
    9: "SIGKILL (a memory or process limit?)",
    24: "SIGXCPU: CPU time limit",
    25: "SIGXFSZ: file size limit",
}


class SandboxError(RuntimeError):
    """The sandbox cannot run here as configured (raised at start-up, with what to do about it)."""


@dataclass(frozen=True)
class Plan:
    """How sandboxes are started on this host: decided once, at start-up."""

    isolation: IsolationMode  # NAMESPACES or RLIMITS
    python: str
    root: bool
    bwrap: str | None


def base_python() -> str:
    """This interpreter without its virtual environment (tool code sees the standard library only)."""
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    return str(base.resolve() if base.exists() else Path(sys.executable).resolve())


def _bwrap_args(plan: Plan, settings: ToolsSettings) -> list[str]:
    assert plan.bwrap is not None
    # --die-with-parent: when bwrap or its parent dies, every process of the sandbox is killed. "Parent"
    # is the *thread* that started bwrap, so sandboxes are started from one long-lived thread (`_spawn`).
    args = [plan.bwrap, "--new-session", "--die-with-parent"]
    if plan.root:  # no user namespace: the runner drops to the slot's uid itself
        args += ["--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    else:
        args += ["--unshare-all"]
    for top in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    prefix = str(Path(plan.python).resolve().parents[1])
    if not prefix.startswith("/usr"):
        # Traversable parents: bwrap would copy their host modes (e.g. /root is 0700).
        for parent in reversed(Path(prefix).parents[:-1]):
            args += ["--perms", "0755", "--dir", str(parent)]
        args += ["--ro-bind", prefix, prefix]
    size = str(settings.file_mb << 20)
    args += ["--proc", "/proc", "--dev", "/dev"]
    args += ["--size", size, "--tmpfs", WORKDIR, "--size", size, "--tmpfs", "/tmp", "--chdir", WORKDIR]
    return args


class _Process:
    """One runner in its sandbox, answering one JSON line per call."""

    def __init__(self, plan: Plan, settings: ToolsSettings, uid: int | None) -> None:
        self._tmp: str | None = None
        config: dict[str, Any] = {
            "uid": uid,
            "kill_all": plan.isolation is IsolationMode.NAMESPACES or uid is not None,
            "output_cap": settings.output_kb << 10,
            "rlimits": {
                "RLIMIT_CPU": settings.cpu_s,
                "RLIMIT_AS": settings.memory_mb << 20,
                "RLIMIT_NPROC": settings.processes,
                "RLIMIT_FSIZE": settings.file_mb << 20,
                "RLIMIT_NOFILE": settings.open_files,
                "RLIMIT_CORE": 0,
            },
        }
        command = [plan.python, "-I", "-S", "-c", RUNNER]
        config["warm"] = settings.warm
        config["preload"] = PRELOAD
        if plan.isolation is IsolationMode.NAMESPACES:
            config["workdir"] = WORKDIR
            config["scratch"] = ["/tmp"]
            command = _bwrap_args(plan, settings) + command
        else:
            self._tmp = tempfile.mkdtemp(prefix="arpo-sandbox-")
            config["workdir"] = self._tmp
            config["scratch"] = []
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={},
            cwd=self._tmp or "/",
            start_new_session=True,
        )
        self._send(config)

    def call(self, code: str, timeout_s: float) -> dict[str, Any]:
        """Run one call; raises OSError when the sandbox died or did not answer in time."""
        self._send({"code": code, "timeout_s": timeout_s})
        stdout = self._pipes()[1]
        if not select.select([stdout], [], [], timeout_s + GRACE_S)[0]:
            raise OSError("the sandbox did not answer in time")
        header = stdout.read(4)
        if len(header) < 4:
            raise OSError(f"the sandbox died: {self._stderr()}")
        reply: dict[str, Any] = marshal.loads(stdout.read(int.from_bytes(header, "big")))
        return reply

    def _send(self, value: dict[str, Any]) -> None:
        data = marshal.dumps(value, 4)
        stdin = self._pipes()[0]
        stdin.write(len(data).to_bytes(4, "big") + data)
        stdin.flush()

    def _pipes(self) -> tuple[IO[bytes], IO[bytes]]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        return self.proc.stdin, self.proc.stdout

    def _stderr(self) -> str:
        self.close()
        assert self.proc.stderr is not None
        return self.proc.stderr.read(4096).decode("utf-8", "replace").strip() or "killed"

    def close(self) -> None:
        """End the runner (and with it the sandbox), kill what is left, delete the work dir."""
        try:
            self._pipes()[0].close()
            self.proc.wait(timeout=1.0)
        except (OSError, subprocess.TimeoutExpired):
            pass
        with contextlib.suppress(OSError):
            os.killpg(self.proc.pid, 9)
        self.proc.wait()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)


@dataclass
class _Slot:
    index: int
    uid: int | None
    process: _Process | None = None


def _result(reply: dict[str, Any], timeout_s: float, isolation: IsolationMode) -> ToolResult:
    stderr, code = reply["stderr"], reply["exit_code"]
    error = None
    if reply["timed_out"]:
        error = f"TimeoutError after {timeout_s:g}s"
    elif code is not None and code < 0:
        error = f"killed by {SIGNALS.get(-code, f'signal {-code}')}"
    elif code:
        lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
        error = lines[-1] if lines else f"exit status {code}"
    output = reply["stdout"] if error is None else (reply["stdout"] + stderr)
    return ToolResult(
        ok=error is None,
        output=output,
        error=error,
        timed_out=reply["timed_out"],
        truncated=reply["truncated"],
        exit_code=code,
        duration_ms=reply["duration_ms"],
        isolation=isolation.value,
    )


class Sandbox:
    """Runs Python calls in `max_concurrency` slots; thread-safe, blocking (call it from worker threads)."""

    def __init__(self, settings: ToolsSettings, plan: Plan | None = None) -> None:
        """`plan` defaults to what `plan_for` finds on this host (it starts a probe sandbox)."""
        self.settings = settings
        self.plan = plan or plan_for(settings)
        root = os.geteuid() == 0
        self._slots: queue.Queue[_Slot] = queue.Queue()
        for i in range(settings.max_concurrency):
            self._slots.put(_Slot(i, settings.uid_base + i if root else None))
        self._lock = threading.Lock()
        self._closed = False
        self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sandbox-spawner")

    def _spawn(self, slot: _Slot) -> _Process:
        """Start a sandbox from the spawner thread, which outlives every sandbox (see --die-with-parent)."""
        return self._spawner.submit(_Process, self.plan, self.settings, slot.uid).result()

    @property
    def isolation(self) -> IsolationMode:
        return self.plan.isolation

    def run(self, code: str, timeout_s: float | None = None) -> ToolResult:
        """Run `code`; every failure (error, timeout, limit, dead sandbox) is a result, never an exception."""
        timeout = self.settings.timeout_s if timeout_s is None else timeout_s
        slot = self._slots.get()
        try:
            return _result(self._call(slot, code, timeout), timeout, self.plan.isolation)
        except OSError as err:
            return ToolResult(
                ok=False, output="", error=f"SandboxError: {err}", isolation=self.plan.isolation.value
            )
        finally:
            self._slots.put(slot)

    def _call(self, slot: _Slot, code: str, timeout: float) -> dict[str, Any]:
        if not self.settings.warm:
            process = self._spawn(slot)
            try:
                return process.call(code, timeout)
            finally:  # the call's processes are dead already; the sandbox's teardown need not delay us
                threading.Thread(target=process.close, daemon=True).start()
        if slot.process is None:
            slot.process = self._spawn(slot)
        try:
            return slot.process.call(code, timeout)
        except OSError:
            slot.process.close()
            slot.process = None
            raise

    def warm_up(self) -> None:
        """Start every warm slot now instead of at its first call."""
        if self.settings.warm:
            for _ in range(self.settings.max_concurrency):
                slot = self._slots.get()
                slot.process = slot.process or self._spawn(slot)
                self._slots.put(slot)

    def close(self) -> None:
        """Stop every slot's sandbox (waits for running calls)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for _ in range(self.settings.max_concurrency):
            slot = self._slots.get()
            if slot.process is not None:
                slot.process.close()
                slot.process = None
        self._spawner.shutdown(wait=True)


def _probe(plan: Plan, settings: ToolsSettings) -> str | None:
    """Run a call that imports from the standard library under `plan`; None when it works, else why not."""
    process = _Process(plan, settings, settings.uid_base if plan.root else None)
    try:
        reply = process.call("import json, traceback\nprint(json.dumps(1))", 10.0)
        if reply["stdout"] != "1\n":
            last = (reply["stderr"].strip().splitlines() or [str(reply)])[-1]
            hint = "; set ARPO_TOOLS_PYTHON to an interpreter the sandbox uid can read" if plan.root else ""
            return f"the probe call failed: {last}{hint}"
        return None
    except OSError as err:
        return str(err)
    finally:
        process.close()


def plan_for(settings: ToolsSettings) -> Plan:
    """Decide the isolation this host gives, by trying it; SandboxError if `settings` demand more."""
    python = settings.python or base_python()
    if not os.access(python, os.X_OK):
        raise SandboxError(f"ARPO_TOOLS_PYTHON: {python!r} is not an executable interpreter")
    root = os.geteuid() == 0
    bwrap = shutil.which("bwrap")
    why = "bubblewrap (`bwrap`) is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    if bwrap is not None and settings.isolation is not IsolationMode.RLIMITS:
        plan = Plan(IsolationMode.NAMESPACES, python, root, bwrap)
        failure = _probe(plan, settings)
        if failure is None:
            return plan
        why = f"bubblewrap cannot create namespaces here: {failure}"
    if settings.isolation is IsolationMode.NAMESPACES:
        raise SandboxError(
            f"the tool sandbox needs namespaces and {why}; "
            "set ARPO_TOOLS_ISOLATION=rlimits to run tool code with resource limits only (no network or "
            "filesystem isolation), or auto to take the best available"
        )
    plan = Plan(IsolationMode.RLIMITS, python, root, None)
    failure = _probe(plan, settings)
    if failure is not None:
        raise SandboxError(f"the tool sandbox cannot start python {python!r}: {failure}")
    return plan
