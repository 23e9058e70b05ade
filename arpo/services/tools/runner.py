"""The process inside a sandbox: runs model-written Python, one call at a time (standard library only).

The tool service starts this file's source as `python -I -S -c SOURCE` inside the sandbox. Frames on
stdin/stdout are a 4-byte big-endian length and a `marshal` (version 4) dict: first the configuration,
then requests `{"code", "timeout_s"}`, each answered by `{"stdout", "stderr", "exit_code", "timed_out",
"truncated", "duration_ms"}`. It drops to the sandbox uid before the first request. The fresh path sends
one request and closes stdin; the warm pool keeps the process and sends many. Imports are kept to
builtins (the fresh path pays for them on every call). For each call it forks a
child that starts its own session in a new empty work directory, sets the resource limits, and runs the
code; the parent captures stdout/stderr up to a cap (the rest is read and dropped), enforces the
wall-clock timeout, then kills every process the call left behind and deletes the call's files.

"Every process the call left behind": with a private pid namespace (or a uid used by nothing else),
`kill(-1, SIGKILL)` reaches exactly the sandbox's own processes, daemons included; otherwise only the
call's process group is killed (`kill_all` is false in the config).
"""

import marshal
import os
import resource
import select
import sys
import time

KILL = 9  # SIGKILL (the signal module costs ~10 ms to import; startup time is the fresh path's budget)


def _add_site_packages():
    """The interpreter's packages, without running `.pth` files (started with -S: site costs tens of ms)."""
    version = "python%d.%d" % sys.version_info[:2]
    for path in (
        os.path.join(sys.prefix, "lib", version, "site-packages"),
        os.path.join(sys.prefix, "lib", "python3", "dist-packages"),
    ):
        if os.path.isdir(path):
            sys.path.append(path)


def _drop_privileges(uid):
    if uid is not None and os.getuid() == 0:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)


def _protect_self():
    """No ptrace or /proc/<pid>/mem access by the code we run (same uid), and reap every orphan."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 0
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER = 1
    except (ImportError, OSError):
        pass


def _compile(source):
    """Compile the call; a bare expression at the end has its value printed (as a REPL would)."""
    import _ast

    tree = compile(source, "<python>", "exec", _ast.PyCF_ONLY_AST)
    last = tree.body[-1] if tree.body else None
    if isinstance(last, _ast.Expr):
        where = {f: getattr(last, f) for f in ("lineno", "col_offset", "end_lineno", "end_col_offset")}
        show = _ast.Name("__arpo_show__", _ast.Load(), **where)
        last.value = _ast.Call(show, [last.value], [], **where)
    return compile(tree, "<python>", "exec")


def _show(value):
    if value is not None:
        sys.stdout.write(repr(value) + "\n")


def _child(code, config, workdir, out_w, err_w):
    os.setsid()
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.chdir(workdir)
    os.environ.clear()
    os.environ.update({"HOME": workdir, "TMPDIR": workdir, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
    for name, value in config["rlimits"].items():
        resource.setrlimit(getattr(resource, name), (value, value))
    namespace = {"__name__": "__main__", "__arpo_show__": _show, "__builtins__": __builtins__}
    status = 0
    try:
        exec(_compile(code), namespace)
    except SystemExit as exit_:
        status = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException as error:
        tb = error.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != "<python>":
            tb = tb.tb_next  # hide this runner's frames
        try:
            import traceback

            traceback.print_exception(type(error), error, tb)
        except ImportError:
            sys.stderr.write("%s: %s\n" % (type(error).__name__, error))
        status = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(status)


def _read_into(fd, kept, cap):
    """Read what is waiting on `fd`; False at end of file. Keeps at most `cap` bytes; True in the
    second slot when something was dropped."""
    data = os.read(fd, 1 << 20)
    room = cap - len(kept)
    kept += data[: max(room, 0)]
    return bool(data), len(data) > room


def _collect(pid, fds, cap, deadline):
    """Read both pipes until the call's process exits, or the deadline passes.

    A pidfd in the same select wakes us when the process exits. Keeps at most `cap` bytes of each pipe
    (the rest is read and dropped). A process the call started may hold the pipes open after the
    call's own process exits; that does not extend the call: what is waiting then is read once.
    -> (kept bytes per fd, truncated, wait status or None if the deadline passed)
    """
    kept = {fd: bytearray() for fd in fds}
    truncated = False
    pidfd = os.pidfd_open(pid)
    watch = [*fds, pidfd]
    try:
        while pidfd in watch:
            left = deadline - time.monotonic()
            if left <= 0:
                return kept, truncated, None
            for fd in select.select(watch, [], [], left)[0]:
                more, dropped = (False, False) if fd == pidfd else _read_into(fd, kept[fd], cap)
                truncated = truncated or dropped
                if not more:
                    watch.remove(fd)
        status = os.waitpid(pid, 0)[1]
        for fd in select.select(watch, [], [], 0)[0]:
            truncated = _read_into(fd, kept[fd], cap)[1] or truncated
        return kept, truncated, status
    finally:
        os.close(pidfd)


def _kill_leftovers(pid, kill_all):
    """Kill the call's processes and reap them (this process is a subreaper, so orphans come here too)."""
    targets = ([-1] if kill_all else []) + [-pid]
    while True:
        for target in targets:
            try:
                os.kill(target, KILL)
            except OSError:
                pass
        try:
            while os.waitpid(-1, os.WNOHANG)[0] != 0:
                pass
        except ChildProcessError:
            return  # nothing left
        if not kill_all:
            return  # processes that left the call's group are out of reach here (no private pid space)
        time.sleep(0.001)


def _status(raw):
    if os.WIFEXITED(raw):
        return os.WEXITSTATUS(raw)
    return -os.WTERMSIG(raw) if os.WIFSIGNALED(raw) else -1


def run_call(request, config, index):
    workdir = os.path.join(config["workdir"], "call-%d" % index)
    os.mkdir(workdir, 0o700)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.close(out_r)
        os.close(err_r)
        _child(request["code"], config, workdir, out_w, err_w)
    os.close(out_w)
    os.close(err_w)
    kept, truncated, raw = _collect(pid, (out_r, err_r), config["output_cap"], start + request["timeout_s"])
    os.close(out_r)
    os.close(err_r)
    timed_out = raw is None
    duration_ms = (time.monotonic() - start) * 1000
    _kill_leftovers(pid, config["kill_all"])
    _remove(workdir)
    return {
        "stdout": kept[out_r].decode("utf-8", "replace"),
        "stderr": kept[err_r].decode("utf-8", "replace"),
        "exit_code": None if timed_out else _status(raw),
        "timed_out": timed_out,
        "truncated": truncated,
        "duration_ms": round(duration_ms, 3),
    }


def _remove(path):
    """Delete a file or a directory tree (no shutil: see the imports); what cannot be deleted stays."""
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            _wipe(path)
            os.rmdir(path)
        else:
            os.unlink(path)
    except OSError:
        pass


def _wipe(directory):
    for name in os.listdir(directory):
        _remove(os.path.join(directory, name))


def _read_frame(stream):
    header = stream.read(4)
    if len(header) < 4:
        return None
    return marshal.loads(stream.read(int.from_bytes(header, "big")))


def _write_frame(stream, value):
    data = marshal.dumps(value, 4)
    stream.write(len(data).to_bytes(4, "big") + data)
    stream.flush()


def main():
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    config = _read_frame(stdin)
    _add_site_packages()
    uid = config["uid"]
    os.makedirs(config["workdir"], exist_ok=True)
    for directory in [config["workdir"], *config["scratch"]]:
        if uid is not None and os.getuid() == 0:
            os.chown(directory, uid, uid)
    _drop_privileges(uid)
    if config["warm"]:
        _protect_self()
        for name in config["preload"]:  # forked children find them imported (copy-on-write: no leaks)
            try:
                __import__(name)
            except ImportError:
                pass
    index = 0
    while (request := _read_frame(stdin)) is not None:
        reply = run_call(request, config, index)
        for directory in config["scratch"]:
            _wipe(directory)
        try:
            _write_frame(stdout, reply)
        except BrokenPipeError:
            return
        index += 1


if __name__ == "__main__":
    main()
