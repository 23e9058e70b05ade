"""The Python sandbox against hostile code: one attack per test, on the fresh and the warm path.

Each test asserts the attack was contained AND that the next call in the same sandbox works. The real
sandbox runs (bubblewrap namespaces, rlimits, a per-slot uid when the tests run as root); nothing is
mocked. After the module: no processes of the sandbox uids and no sandbox temp dirs are left.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from arpo.localredis import LocalRedis
from arpo.proto.tools import ToolResult
from arpo.services.tools.sandbox import Sandbox, SandboxError
from arpo.services.tools.settings import IsolationMode, ToolsSettings

UID_BASE = 62000
SLOTS = 2


def _processes_of(uids: set[int]) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        if int(uid_line.split()[1]) in uids and "State:\tZ" not in status:
            found.append(f"{entry.name}: {cmdline[:80]}")
    return found


def _temp_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("arpo-sandbox-*")}


MODES = ["fresh", "warm", "rlimits"]


def _uids(box: Sandbox) -> set[int]:
    return set(range(box.settings.uid_base, box.settings.uid_base + SLOTS))


def _sandbox(mode: str) -> Iterator[Sandbox]:
    """Each mode has its own uids (module fixtures of different modes can be alive at the same time)."""
    before = _temp_dirs()
    settings = ToolsSettings(
        warm=mode != "fresh",
        isolation=IsolationMode.RLIMITS if mode == "rlimits" else IsolationMode.NAMESPACES,
        # rlimits mode has no private view of the filesystem: its uid needs an interpreter it can read.
        python="/usr/bin/python3" if mode == "rlimits" else None,
        max_concurrency=SLOTS,
        uid_base=UID_BASE + 10 * MODES.index(mode),
        timeout_s=3,
        cpu_s=5,
        memory_mb=512,
        processes=24,
        file_mb=8,
    )
    box = Sandbox(settings)
    assert box.isolation.value == ("rlimits" if mode == "rlimits" else "namespaces")
    yield box
    box.close()
    if os.geteuid() == 0:
        for _ in range(100):  # the kernel kills a sandbox's processes when bwrap goes: give it a moment
            if not _processes_of(_uids(box)):
                break
            time.sleep(0.02)
        assert _processes_of(_uids(box)) == []
    assert _temp_dirs() <= before


@pytest.fixture(scope="module", params=["fresh", "warm"])
def sandbox(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    """Full isolation (namespaces), both paths: every attack is contained."""
    yield from _sandbox(request.param)


@pytest.fixture(scope="module", params=["fresh", "warm", "rlimits"])
def any_sandbox(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    """Also the rlimits fallback: the resource attacks are contained there too (it has no network or
    filesystem isolation, so those attacks are only run against `sandbox`)."""
    if request.param == "rlimits" and os.geteuid() != 0:
        pytest.fail("the rlimits fallback kills leftovers through a per-slot uid: run the tests as root")
    yield from _sandbox(request.param)


def run(box: Sandbox, code: str, timeout_s: float | None = None) -> ToolResult:
    return box.run(textwrap.dedent(code), timeout_s)


def next_call_works(box: Sandbox) -> None:
    for _ in range(SLOTS):  # every slot, whichever the attack used
        result = run(box, "6 * 7")
        assert result.ok and result.output == "42\n", result


def test_plain_call_and_last_expression(any_sandbox: Sandbox) -> None:
    result = run(any_sandbox, "x = 2 ** 10\nprint('x is', x)\nx + 1")
    assert result.ok and result.output == "x is 1024\n1025\n" and result.exit_code == 0
    assert result.isolation == any_sandbox.isolation.value
    error = run(any_sandbox, "1 / 0")
    assert not error.ok and error.error == "ZeroDivisionError: division by zero"
    assert "<python>" in error.output and "runner" not in error.output


def test_fork_bomb_python(any_sandbox: Sandbox) -> None:
    result = run(
        any_sandbox,
        """
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
        """,
        timeout_s=2,
    )
    assert result.timed_out and not result.ok
    next_call_works(any_sandbox)


def test_fork_bomb_shell(any_sandbox: Sandbox) -> None:
    result = run(
        any_sandbox,
        "import subprocess; subprocess.run(['/bin/sh', '-c', 'b() { b | b & }; b'])\nprint('survived')",
        timeout_s=2,
    )
    assert not result.ok or result.output == "survived\n"
    next_call_works(any_sandbox)


def test_ten_gigabyte_allocation(any_sandbox: Sandbox) -> None:
    result = run(any_sandbox, "x = bytearray(10 * 1024 ** 3)")
    assert not result.ok and result.error == "MemoryError"
    next_call_works(any_sandbox)


def test_infinite_loop(any_sandbox: Sandbox) -> None:
    result = run(any_sandbox, "while True:\n    pass", timeout_s=1)
    assert result.timed_out and result.error == "TimeoutError after 1s" and result.exit_code is None
    assert 900 <= result.duration_ms < 3000
    next_call_works(any_sandbox)


def test_sleep_forever(any_sandbox: Sandbox) -> None:
    result = run(any_sandbox, "import time\ntime.sleep(10 ** 6)", timeout_s=1)
    assert result.timed_out and not result.ok
    next_call_works(any_sandbox)


def test_one_gigabyte_print_flood(any_sandbox: Sandbox) -> None:
    code = "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(1024):\n    sys.stdout.write(chunk)"
    result = run(any_sandbox, code, timeout_s=20)
    assert result.truncated
    assert len(result.output.encode()) <= any_sandbox.settings.output_kb << 10
    next_call_works(any_sandbox)


def test_disk_fill_in_work_dir(sandbox: Sandbox) -> None:
    host_free = shutil.disk_usage(tempfile.gettempdir()).free
    code = """
    n = 0
    while True:
        with open(f'fill{n}', 'wb') as f:
            f.write(b'x' * (4 << 20))
        n += 1
    """
    result = run(sandbox, code)
    assert not result.ok and not result.timed_out  # file-size limit or a full private tmpfs
    assert shutil.disk_usage(tempfile.gettempdir()).free > host_free - (64 << 20)
    written = run(sandbox, "open('small', 'w').write('ok')\nimport os\nsorted(os.listdir('.'))")
    assert written.ok and written.output == "['small']\n"  # a fresh, empty work dir
    next_call_works(sandbox)


def test_writing_outside_the_work_dir(sandbox: Sandbox, tmp_path: Path) -> None:
    for target in ["/usr/evil", "/etc/evil", "/evil", str(tmp_path / "evil")]:
        result = run(sandbox, f"open({target!r}, 'w').write('x')")
        assert not result.ok, target
        assert not Path(target).exists()
    escaped = Path(tempfile.gettempdir()) / f"arpo-escape-{os.getpid()}"
    result = run(sandbox, f"open({str(escaped)!r}, 'w').write('x')")  # lands in the private /tmp
    assert not escaped.exists(), result
    next_call_works(sandbox)


def test_reading_another_calls_files(sandbox: Sandbox) -> None:
    wrote = run(sandbox, "open('secret', 'w').write('s3cr3t')\nopen('/tmp/secret', 'w').write('s3cr3t')\n1")
    assert wrote.ok
    code = """
    import os
    found = []
    for root in ['/work', '/tmp']:
        for path, dirs, files in os.walk(root):
            found += [os.path.join(path, f) for f in files]
    found
    """
    for _ in range(SLOTS):
        assert run(sandbox, code).output == "[]\n"


def test_reading_host_files(sandbox: Sandbox, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cr3t")
    for path in [str(secret), "/root/.bash_history", str(Path.cwd() / "pyproject.toml")]:
        result = run(sandbox, f"open({path!r}).read()")
        assert not result.ok and "s3cr3t" not in result.output, path
    next_call_works(sandbox)


@pytest.mark.parametrize(
    "code",
    [
        "import urllib.request\nurllib.request.urlopen('http://example.com', timeout=2).status",
        "import socket\nsocket.getaddrinfo('example.com', 80)",
        "import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=2)",
        "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)",
    ],
    ids=["http", "dns", "tcp", "raw-socket"],
)
def test_network_egress(sandbox: Sandbox, code: str) -> None:
    result = run(sandbox, code)
    assert not result.ok and result.error is not None
    assert any(e in result.error for e in ("Error", "gaierror", "URLError")), result.error
    next_call_works(sandbox)


def test_host_redis_port(sandbox: Sandbox, redis_server: LocalRedis) -> None:
    port = int(redis_server.url.rsplit(":", 1)[1].split("/")[0])
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass  # reachable from the host, so a refusal below is the sandbox's doing
    result = run(sandbox, f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)")
    assert not result.ok and "ConnectionRefusedError" in (result.error or "")
    next_call_works(sandbox)


def test_secrets_in_the_environment(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARPO_TEST_SECRET", "s3cr3t")
    code = """
    import os
    seen = [str(dict(os.environ))]
    for pid in ['1', 'self', str(os.getppid())]:
        try:
            seen.append(open(f'/proc/{pid}/environ').read())
        except OSError as err:
            seen.append(type(err).__name__)
    print(seen)
    """
    result = run(sandbox, code)
    assert result.ok and "s3cr3t" not in result.output and "ARPO_TEST_SECRET" not in result.output
    next_call_works(sandbox)


def test_symlink_escape(sandbox: Sandbox, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cr3t")
    code = f"""
    import os
    os.symlink({str(secret)!r}, 'link')
    os.symlink('/', 'root')
    print(sorted(os.listdir('root')))
    open('link').read()
    """
    result = run(sandbox, code)
    assert not result.ok and "s3cr3t" not in result.output and "FileNotFoundError" in (result.error or "")
    assert "home" not in result.output and "work" in result.output  # the sandbox's own root
    next_call_works(sandbox)


def test_double_fork_daemon(any_sandbox: Sandbox) -> None:
    marker = "1234.5678"
    code = f"""
    import os
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.execv('/bin/sleep', ['sleep', '{marker}'])
        os._exit(0)
    print('parent done')
    """
    result = run(any_sandbox, code)
    assert result.ok and result.output == "parent done\n"
    leftovers = [p for p in _processes_of(_uids(any_sandbox)) if marker in p]
    if os.geteuid() != 0:  # not root: the uid is ours; look for the marker among all processes
        leftovers = [p for p in _processes_of({os.getuid()}) if marker in p]
    assert leftovers == []
    next_call_works(any_sandbox)


def test_killing_other_processes(sandbox: Sandbox, redis_server: LocalRedis) -> None:
    code = f"""
    import os
    outcomes = []
    for pid in [{os.getpid()}, 1, -1]:
        try:
            os.kill(pid, 9)
            outcomes.append('sent')
        except OSError as err:
            outcomes.append(type(err).__name__)
    print(outcomes)
    """
    run(sandbox, code)  # whatever it reports (kill(-1) may take down its own sandbox), we are alive:
    assert redis.Redis.from_url(redis_server.url).ping()
    next_call_works(sandbox)


def test_ctypes_poking_memory(any_sandbox: Sandbox) -> None:
    result = run(any_sandbox, "import ctypes\nctypes.string_at(0)")
    assert not result.ok and result.exit_code == -11 and "signal 11" in (result.error or "")
    next_call_works(any_sandbox)


def test_writes_do_not_survive_into_the_next_call(sandbox: Sandbox) -> None:
    """Warm path: a call cannot leave state for later calls (modules, globals, files)."""
    assert run(sandbox, "import math\nmath.pi = 3\nimport builtins\nbuiltins.evil = 1\nmath.pi").ok
    for _ in range(SLOTS):
        result = run(sandbox, "import math, builtins\n(math.pi, hasattr(builtins, 'evil'))")
        assert result.output == "(3.141592653589793, False)\n"


def test_without_bubblewrap_namespaces_are_refused_and_auto_falls_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")  # no bwrap to find
    with pytest.raises(SandboxError, match=r"bubblewrap .* is not installed.*ARPO_TOOLS_ISOLATION=rlimits"):
        Sandbox(ToolsSettings(max_concurrency=1, uid_base=UID_BASE + 50))
    box = Sandbox(
        ToolsSettings(isolation="auto", python="/usr/bin/python3", max_concurrency=1, uid_base=UID_BASE + 50)
    )
    try:
        assert box.isolation is IsolationMode.RLIMITS
        assert box.run("6 * 7").isolation == "rlimits"
    finally:
        box.close()
