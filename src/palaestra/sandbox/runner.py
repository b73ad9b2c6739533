"""The job runner that lives inside every sandbox (Docker container or bubblewrap namespace).

This file is executed by the sandbox's own ``python3`` (``python3 -I -S -c <this source>``), so it imports
only the standard library and must not import palaestra. It speaks length-prefixed JSON on its
stdin/stdout: a 4-byte big-endian length, then a UTF-8 JSON object; binary payloads are base64.

Requests (one at a time) and their answers:
  {"op": "ping"}                                          -> {"ok": true, "pid": N}
  {"op": "write", "path", "data", "mode"}                 -> {"ok": true}
  {"op": "read", "path", "max_bytes"}                     -> {"ok": true, "data": b64}
  {"op": "exec", "argv", "stdin", "env", "timeout", "limits"} -> {"ok": true, "status", "exit_code", ...}
A failed request answers {"ok": false, "error": "..."}.

The runner forks each job into its own session (process group), applies rlimits, enforces the wall-clock
limit and the output caps, and afterwards kills the job's process group and, when it owns its PID namespace
(``sweep``), every other process it may signal, so nothing a job starts outlives the job.
"""

import base64
import contextlib
import json
import os
import resource
import select
import signal
import struct
import sys
import time

WORKDIR = os.environ.get("PALAESTRA_WORKDIR", "/workspace")
SWEEP = os.environ.get("PALAESTRA_SWEEP", "0") == "1"
ADDRESS_SPACE_LIMIT = os.environ.get("PALAESTRA_RLIMIT_AS", "0") == "1"
OOM_CONTROL = "/sys/fs/cgroup/memory/memory.oom_control"
OOM_EVENTS = "/sys/fs/cgroup/memory.events"
MEMORY_MARKERS = (b"MemoryError", b"std::bad_alloc", b"Cannot allocate memory", b"out of memory")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CHUNK = 65536

PROTO_IN = os.dup(0)
PROTO_OUT = os.dup(1)


def _detach_protocol_fds():
    """Move the protocol off fds 0/1 so no job can read or write the runner's channel."""
    os.set_inheritable(PROTO_IN, False)
    os.set_inheritable(PROTO_OUT, False)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)


def read_exact(n):
    parts = []
    while n:
        chunk = os.read(PROTO_IN, n)
        if not chunk:
            return None
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def read_message():
    header = read_exact(4)
    if header is None:
        return None
    body = read_exact(struct.unpack(">I", header)[0])
    return None if body is None else json.loads(body)


def write_message(message):
    body = json.dumps(message).encode()
    data = struct.pack(">I", len(body)) + body
    while data:
        written = os.write(PROTO_OUT, data)
        data = data[written:]


def resolve(path):
    """A path inside the work dir; refuses absolute paths and `..` escapes."""
    full = os.path.normpath(os.path.join(WORKDIR, path))
    if full != WORKDIR and not full.startswith(WORKDIR + "/"):
        raise ValueError(f"path escapes the work directory: {path!r}")
    return full


def op_write(req):
    full = resolve(req["path"])
    os.makedirs(os.path.dirname(full), exist_ok=True)
    fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, req.get("mode", 0o644))
    try:
        data = base64.b64decode(req["data"])
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    os.chmod(full, req.get("mode", 0o644))
    return {"ok": True}


def op_read(req):
    with open(resolve(req["path"]), "rb") as f:
        data = f.read(req.get("max_bytes", 64 << 20))
    return {"ok": True, "data": base64.b64encode(data).decode()}


def oom_kills():
    """The memory cgroup's OOM-kill counter (v1 or v2), or -1 where it cannot be read."""
    for path, key in ((OOM_CONTROL, "oom_kill"), (OOM_EVENTS, "oom_kill")):
        try:
            with open(path) as f:
                for line in f:
                    name, _, value = line.partition(" ")
                    if name == key:
                        return int(value)
        except OSError:
            continue
    return -1


def child_setup(limits, argv, env, fds, errpipe_w):
    """In the forked child: new session, rlimits, stdio, exec. Never returns."""
    try:
        os.setsid()
        stdin_r, stdout_w, stderr_w = fds
        os.dup2(stdin_r, 0)
        os.dup2(stdout_w, 1)
        os.dup2(stderr_w, 2)
        os.closerange(3, errpipe_w)
        os.closerange(errpipe_w + 1, 1 << 16)
        cpu = max(1, int(limits["cpu_seconds"] + 0.999))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        file_size = limits["file_size_mb"] << 20
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if ADDRESS_SPACE_LIMIT:
            memory = limits["memory_mb"] << 20
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        try:  # make the job, not the runner, the OOM killer's first choice
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write("1000")
        except OSError:
            pass
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        os.chdir(WORKDIR)
        os.execvpe(argv[0], argv, env)
    except BaseException as exc:
        try:
            os.write(errpipe_w, (f"{type(exc).__name__}: {exc}").encode())
        finally:
            os._exit(127)
    os._exit(127)


def kill_everything(pid):
    """Kill the job's process group and, in our own PID namespace, every process we may signal."""
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)
    if SWEEP:
        with contextlib.suppress(OSError):
            os.kill(-1, signal.SIGKILL)  # spares init (pid 1) and ourselves
        wait_until_alone()


def others_in_namespace():
    me = os.getpid()
    return [p for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, me)]


def wait_until_alone(bound=2.0):
    """Killed processes hold their pids (and the pid limit) until init reaps them: wait for that."""
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        reap_children()
        rest = others_in_namespace()
        if not rest:
            return
        with contextlib.suppress(OSError):
            os.kill(-1, signal.SIGKILL)  # anything forked between the sweep and now
        time.sleep(0.002)


def reap_children():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


class Capture:
    """One output stream with a byte cap."""

    def __init__(self, cap):
        self.cap = cap
        self.parts = []
        self.size = 0
        self.truncated = False

    def add(self, data):
        room = self.cap - self.size
        if len(data) > room:
            data = data[: max(room, 0)]
            self.truncated = True
        if data:
            self.parts.append(data)
            self.size += len(data)

    def value(self):
        return b"".join(self.parts)


def fork_with_retry(attempts=50):
    for _ in range(attempts - 1):
        try:
            return os.fork()
        except BlockingIOError:  # the pid limit, until the last job's processes are reaped
            time.sleep(0.01)
    return os.fork()


def op_exec(req):
    limits = req["limits"]
    argv = req["argv"]
    env = {"PATH": DEFAULT_PATH, "HOME": WORKDIR, "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
    env.update(req.get("env") or {})
    stdin_data = base64.b64decode(req.get("stdin", ""))
    timeout = float(req["timeout"])

    stdin_r, stdin_w = os.pipe()
    stdout_r, stdout_w = os.pipe()
    stderr_r, stderr_w = os.pipe()
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    oom_before = oom_kills()
    started = time.monotonic()
    pid = fork_with_retry()
    if pid == 0:
        child_setup(limits, argv, env, (stdin_r, stdout_w, stderr_w), err_w)
    for fd in (stdin_r, stdout_w, stderr_w, err_w):
        os.close(fd)
    exec_error = b""
    while True:
        chunk = os.read(err_r, 4096)  # EOF once exec succeeded (close-on-exec) or the child died
        if not chunk:
            break
        exec_error += chunk
    os.close(err_r)

    captures = {stdout_r: Capture(limits["output_bytes"]), stderr_r: Capture(limits["output_bytes"])}
    outcome = pump(pid, started + timeout, stdin_w, stdin_data, captures)
    wall = time.monotonic() - started
    kill_everything(pid)
    drain(captures)
    reap_children()
    stdout, stderr = captures[stdout_r], captures[stderr_r]
    if exec_error:
        stderr.add(b"runner: cannot execute %s: %s\n" % (argv[0].encode(), exec_error))
    status, exit_code, detail = classify(outcome, limits, oom_before, stderr.value())
    return {
        "ok": True,
        "status": status,
        "exit_code": exit_code,
        "stdout": base64.b64encode(stdout.value()).decode(),
        "stderr": base64.b64encode(stderr.value()).decode(),
        "stdout_truncated": stdout.truncated,
        "stderr_truncated": stderr.truncated,
        "wall": wall,
        "detail": detail,
    }


def pump(pid, deadline, stdin_w, stdin_data, captures):
    """Feed stdin, collect output until the job exits: ("exit", waitstatus) or why it was cut short."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None  # poll the child with a short timeout instead
    poller = select.poll()
    for fd in captures:
        poller.register(fd, select.POLLIN)
    if pidfd is not None:
        poller.register(pidfd, select.POLLIN)
    if stdin_data:
        os.set_blocking(stdin_w, False)
        poller.register(stdin_w, select.POLLOUT)
    else:
        os.close(stdin_w)
        stdin_w = None
    open_outputs = set(captures)
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return ("timeout", None)
            waited, status = os.waitpid(pid, os.WNOHANG)
            if waited:
                return ("exit", status)
            wait_ms = remaining * 1000 if pidfd is not None else min(remaining * 1000, 5)
            for fd, _event in poller.poll(wait_ms):
                if fd == stdin_w:
                    stdin_data = feed(stdin_w, stdin_data)
                    if not stdin_data:
                        poller.unregister(stdin_w)
                        os.close(stdin_w)
                        stdin_w = None
                elif fd in open_outputs:
                    data = read_some(fd)
                    if not data:
                        poller.unregister(fd)
                        open_outputs.discard(fd)
                        continue
                    captures[fd].add(data)
                    if captures[fd].truncated:
                        return ("output_limit", None)
    finally:
        if stdin_w is not None:
            os.close(stdin_w)
        if pidfd is not None:
            os.close(pidfd)


def feed(fd, data):
    try:
        written = os.write(fd, data[:CHUNK])
    except BlockingIOError:
        return data
    except BrokenPipeError:
        return b""
    return data[written:]


def read_some(fd):
    try:
        return os.read(fd, CHUNK)
    except OSError:
        return b""


def drain(captures):
    """Read what is left in the pipes (their writers are dead now), then close them."""
    for fd, capture in captures.items():
        os.set_blocking(fd, False)
        while True:
            data = read_some(fd) if not capture.truncated else b""
            if not data:
                break
            capture.add(data)
        os.close(fd)


def classify(outcome, limits, oom_before, stderr):
    kind, wait_status = outcome
    if kind == "timeout":
        return "timeout", None, "wall-clock limit of the job reached"
    if kind == "output_limit":
        return "output_limit", None, f"output exceeded {limits['output_bytes']} bytes"
    if oom_before >= 0 and oom_kills() > oom_before:
        return "out_of_memory", None, "killed by the memory cgroup"
    if os.WIFSIGNALED(wait_status):
        sig = os.WTERMSIG(wait_status)
        if sig == signal.SIGXCPU:
            return "timeout", None, "CPU time limit reached"
        if sig == signal.SIGXFSZ:
            return "output_limit", None, "file size limit reached"
        if sig in (signal.SIGKILL, signal.SIGSEGV, signal.SIGABRT) and memory_marker(stderr):
            return "out_of_memory", None, "memory limit reached"
        return "killed", -sig, f"killed by signal {sig}"
    code = os.WEXITSTATUS(wait_status)
    if code != 0 and memory_marker(stderr):
        return "out_of_memory", code, "memory limit reached"
    return "ok", code, ""


def memory_marker(stderr):
    tail = stderr[-4096:]
    return any(marker in tail for marker in MEMORY_MARKERS)


HANDLERS = {"write": op_write, "read": op_read, "exec": op_exec}


def main():
    _detach_protocol_fds()
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    os.makedirs(WORKDIR, exist_ok=True)
    while True:
        req = read_message()
        if req is None:
            return
        op = req.get("op")
        try:
            reply = {"ok": True, "pid": os.getpid()} if op == "ping" else HANDLERS[op](req)
        except Exception as exc:
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        write_message(reply)


if __name__ == "__main__":
    main()
    sys.exit(0)
