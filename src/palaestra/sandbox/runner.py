"""The job runner that lives inside every sandbox (Docker container or bubblewrap namespace).

This file is executed by the sandbox's own ``python3`` (``python3 -I -S -c <this source>``), so it imports
only the standard library and must not import palaestra. It speaks length-prefixed JSON on its
stdin/stdout: a 4-byte big-endian length, then a UTF-8 JSON object; binary payloads are base64.

Requests (one at a time) and their answers:
  {"op": "ping"}                                          -> {"ok": true, "pid": N}
  {"op": "write", "path", "data", "mode"}                 -> {"ok": true}
  {"op": "read", "path", "max_bytes"}                     -> {"ok": true, "data": b64}
  {"op": "exec", "argv", "stdin", "env", "timeout", "limits"} -> {"ok": true, "status", "exit_code", ...,
                                                             "via": "fork" or "exec"}
A failed request answers {"ok": false, "error": "..."}.

The runner starts each job in its own session (process group), applies rlimits, enforces the wall-clock
limit and the output caps, and afterwards kills the job's process group and, when it owns its PID namespace
(``sweep``), everything the job left behind, so nothing a job starts outlives the job.

Python fast path (the zygote). Starting an interpreter, and importing unittest, is most of what a small
Python job costs, so the runner keeps a fork server: this same file run by a plain ``python3`` in its
second role, which imports common modules once and then does nothing but fork. For a job ``python3 SCRIPT
...``, ``python3 -c CODE ...`` or ``python3 -m MODULE ...`` whose environment would start an interpreter
the same way, the runner asks the zygote for a child; the fresh child receives the job (and its stdio pipes,
over SCM_RIGHTS), becomes the job's process exactly as for an exec (session, rlimits, stdio, work dir,
environment) and runs the program as ``__main__`` the way the interpreter does (``sys.argv``,
``sys.path[0]``, exit codes, tracebacks); the zygote reports the child's wait status. The zygote never
receives a job's data and never runs a job, so every job starts from the same pristine state. Everything
else is exec'd, and so is any job the child cannot reproduce faithfully (a work-dir file that would shadow
an already imported module, a user site directory, a script that is not a plain source file).

The runner is its PID namespace's init (pid 1) on both built-in backends: a Docker container's main process
(no docker-init), or `bwrap --as-pid-1`. Pid 1 holds the container's stdio, which carries this protocol, so
it must be a process jobs cannot reach through /proc/1/fd: the runner is non-dumpable. As init it reaps
every orphan as soon as SIGCHLD says one exited (`Reaper`), keeping the wait statuses of its own children
for their owners; and the kernel delivers to pid 1 only signals it handles (SIGCHLD), so a job can neither
kill nor stop it.
"""

import base64
import builtins
import contextlib
import gc
import json
import os
import resource
import select
import signal
import socket
import struct
import sys
import time
from importlib.machinery import BuiltinImporter, SourceFileLoader

WORKDIR = os.environ.get("PALAESTRA_WORKDIR", "/workspace")
SWEEP = os.environ.get("PALAESTRA_SWEEP", "0") == "1"
ADDRESS_SPACE_LIMIT = os.environ.get("PALAESTRA_RLIMIT_AS", "0") == "1"
OOM_CONTROL = "/sys/fs/cgroup/memory/memory.oom_control"
OOM_EVENTS = "/sys/fs/cgroup/memory.events"
MEMORY_MARKERS = (b"MemoryError", b"std::bad_alloc", b"Cannot allocate memory", b"out of memory")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BASE_ENV = {"PATH": DEFAULT_PATH, "HOME": WORKDIR, "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
CHUNK = 65536
STOP_CHECK_SECONDS = 0.25  # how often a running job is checked for being stopped (SIGSTOP)
# A job that hit its wall-clock limit having used less than this share of it on a CPU, while its process
# waited on a run queue for more than STARVED_WAIT_SHARE of it, was starved by the host, not slow.
STARVED_CPU_SHARE = 0.5
STARVED_WAIT_SHARE = 0.3
MAX_FD = 1 << 16
PR_SET_DUMPABLE = 4
# Signals whose disposition the runner changes: a job's process gets them back at their defaults.
RUNNER_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD, signal.SIGINT)

ZYGOTE_ROLE = "PALAESTRA_ZYGOTE"  # in the zygote's environment: run this file as the zygote
ZYGOTE_FD = 3  # the zygote's end of its control socket
ZYGOTE_NAME = "pal-zygote"  # its /proc comm, so tests and people can tell it apart
ZYGOTE_HOME = "/nonexistent"  # while it starts: no user site directory, nothing from the work dir
ZYGOTE_PRELOAD = (
    "runpy",
    "importlib.machinery",
    "unittest",
    "json",
    "re",
    "collections",
    "functools",
    "itertools",
    "math",
    "typing",
    "dataclasses",
    "random",
    "heapq",
    "bisect",
    "string",
)
ZYGOTE_ANSWER_SECONDS = 1.5  # a zygote that takes longer to fork or report is stopped or broken
ZYGOTE_MAX_FAILED_STARTS = 3
# Environment variables read while an interpreter starts (or by the C library at process start): a job
# that sets them differently from BASE_ENV gets a real interpreter.
STARTUP_VAR_PREFIXES = ("PYTHON", "LC_", "LD_", "MALLOC_", "GLIBC_")
STARTUP_VAR_NAMES = frozenset({"LANG", "LANGUAGE", "HOME", "TZ", "TMPDIR"})


# -- framing --------------------------------------------------------------------------------------------


def read_exact(fd, n):
    parts = []
    while n:
        chunk = os.read(fd, n)
        if not chunk:
            return None
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def read_message(fd):
    header = read_exact(fd, 4)
    if header is None:
        return None
    body = read_exact(fd, struct.unpack(">I", header)[0])
    return None if body is None else json.loads(body)


def frame(message):
    body = json.dumps(message).encode()
    return struct.pack(">I", len(body)) + body


def write_all(fd, data):
    while data:
        data = data[os.write(fd, data) :]


# -- files ----------------------------------------------------------------------------------------------


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
        write_all(fd, memoryview(base64.b64decode(req["data"])))
    finally:
        os.close(fd)
    os.chmod(full, req.get("mode", 0o644))
    return {"ok": True}


def op_read(req):
    with open(resolve(req["path"]), "rb") as f:
        data = f.read(req.get("max_bytes", 64 << 20))
    return {"ok": True, "data": base64.b64encode(data).decode()}


# -- small process helpers ------------------------------------------------------------------------------


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


def set_dumpable(flag):
    """PR_SET_DUMPABLE: whether same-user processes (jobs) may ptrace this one or read its memory."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, int(flag), 0, 0, 0)
    except Exception:  # no ctypes in a minimal image: signals are then the only thing a job can't do more
        pass


def set_process_name(name):
    with contextlib.suppress(OSError), open("/proc/self/comm", "w") as f:
        f.write(name[:15])


def which(name, path):
    """The file execvpe would run for `name` under PATH `path`, as the interpreter names sys.executable."""
    if "/" in name:
        return name
    for directory in path.split(":"):
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def process_stat(pid):
    """(parent pid, process group) of a process, or None when it is gone."""
    fields = stat_fields(pid)
    return None if fields is None else (int(fields[1]), int(fields[2]))


def stat_fields(pid):
    """/proc/PID/stat after the command name (fields[0] is the state), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_seconds(pid):
    """CPU time of a process and of the children it reaped (utime, stime, cutime, cstime)."""
    fields = stat_fields(pid)
    return 0.0 if fields is None else sum(int(x) for x in fields[11:15]) / CLOCK_TICKS


def cpu_wait_seconds(pid):
    """How long a process waited on a run queue for a CPU (schedstat), or 0 where unknown."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def is_stopped(pid):
    """Whether a process is stopped by a signal (SIGSTOP and friends) or traced."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] in ("T", "t")


def readable(sock, timeout):
    return bool(select.select([sock], [], [], timeout)[0])


def fork_with_retry(attempts=50):
    for _ in range(attempts - 1):
        try:
            return os.fork()
        except BlockingIOError:  # the pid limit, until the last job's processes are reaped
            time.sleep(0.01)
    return os.fork()


class Reaper:
    """Reaps every exited child, orphans included, and keeps the wait statuses of the children we watch.

    As a container's init the runner inherits every orphan of a job; unreaped they would fill the pid limit
    as zombies. Reaping happens only in the runner's main flow (never inside a signal handler), so a child
    is watched before anything can reap it and its status is never lost to a `waitpid(-1)`.
    """

    def __init__(self):
        self.watched = {}  # pid -> wait status, None while the child runs

    def watch(self, pid):
        self.watched[pid] = None

    def forget(self, pid):
        self.watched.pop(pid, None)

    def reap(self):
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.watched:
                self.watched[pid] = status

    def status_of(self, pid):
        """The wait status of a watched child, or None while it runs."""
        self.reap()
        return self.watched.get(pid)


REAPER = Reaper()


def wake_on_child_exit():
    """A pipe that becomes readable when a child exits (SIGCHLD), so the runner reaps orphans at once."""
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    signal.signal(signal.SIGCHLD, lambda _sig, _frame: None)  # handled, so pid 1 receives it at all
    return wake_r


def reset_signals():
    """In a child about to become a job or the zygote: signal handling as a fresh process has it."""
    signal.set_wakeup_fd(-1)
    for sig in RUNNER_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)


# -- becoming a job's process (both paths) --------------------------------------------------------------


def enter_job_process(limits, stdio, keep_fd=-1):
    """In a job's process: its own session, the job's stdio, rlimits, the work dir."""
    os.setsid()
    for target, fd in enumerate(stdio):
        os.dup2(fd, target)
    if keep_fd >= 0:
        os.closerange(3, keep_fd)
        os.closerange(keep_fd + 1, MAX_FD)
    else:
        os.closerange(3, MAX_FD)
    cpu = max(1, int(limits["cpu_seconds"] + 0.999))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    file_size = limits["file_size_mb"] << 20
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if ADDRESS_SPACE_LIMIT:
        memory = limits["memory_mb"] << 20
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    try:  # make the job, not the runner or the zygote, the OOM killer's first choice
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")
    except OSError:
        pass
    os.chdir(WORKDIR)


def exec_program(argv, env):
    """Replace this process with argv (signal dispositions as a fresh process has them). Raises on failure."""
    reset_signals()
    os.execvpe(argv[0], argv, env)


def exec_child(limits, argv, env, stdio, errpipe_w):
    """In a child forked by the runner: become the job's process and exec it. Never returns."""
    try:
        reset_signals()  # first: the runner's SIGCHLD wake-up fd must not be written from here
        enter_job_process(limits, stdio, keep_fd=errpipe_w)
        exec_program(argv, env)
    except BaseException as exc:
        try:
            os.write(errpipe_w, (f"{type(exc).__name__}: {exc}").encode())
        finally:
            os._exit(127)
    os._exit(127)


# -- the Python fast path: which jobs, and how the zygote's child runs them ------------------------------


def python_invocation(argv):
    """(mode, target) for `python3 SCRIPT ...`, `python3 -c CODE ...`, `python3 -m MODULE ...`; else None."""
    if len(argv) >= 3 and argv[1] in ("-c", "-m"):
        return argv[1], argv[2]
    if len(argv) >= 2 and argv[1] and not argv[1].startswith("-"):
        return "script", argv[1]
    return None


def starts_interpreter_alike(env):
    """Whether an interpreter started under `env` comes up exactly like one started under BASE_ENV."""
    for key in set(env) | set(BASE_ENV):
        read_at_start = key.startswith(STARTUP_VAR_PREFIXES) or key in STARTUP_VAR_NAMES
        if read_at_start and env.get(key) != BASE_ENV.get(key):
            return False
    return True


def shadows_imported_module(directory):
    """Whether `directory` (the job's sys.path[0]) holds something named like an already imported module.

    A fresh interpreter would import the job's file; the zygote's child already has the module. Names are
    compared by stem, so this errs towards a (correct, slower) real exec.
    """
    imported = {name.partition(".")[0] for name in sys.modules} - set(sys.builtin_module_names)
    try:
        entries = os.listdir(directory or ".")
    except OSError:
        return True
    return any(entry.partition(".")[0] in imported for entry in entries)


def user_site_exists():
    """Whether the job's user site directory exists (a fresh interpreter would put it on sys.path)."""
    import site

    if not site.ENABLE_USER_SITE:
        return False
    site.USER_BASE = site.USER_SITE = None  # computed by the zygote for its own HOME: recompute for the job's
    return os.path.isdir(site.getusersitepackages())


def read_script(path):
    """The source of a plain script file, or None when the interpreter would do something else with it."""
    if path.endswith(".pyc") or not os.path.isfile(path):
        return None  # missing files, directories and byte code: the interpreter's own handling
    try:
        with open(path, "rb") as f:
            source = f.read()
    except OSError:
        return None
    return None if source.startswith(b"PK\x03\x04") else source  # a zip application


def fresh_main_module(loader, file=None):
    """A `__main__` module with the attributes the interpreter gives it."""
    main = type(sys)("__main__")
    main.__loader__ = loader
    main.__dict__.update(__annotations__={}, __builtins__=builtins)
    if file is not None:
        main.__dict__.update(__file__=file, __cached__=None)
    return main


class PythonJob:
    """In a child of the zygote: become the job's `python3` process and run its program as `__main__`."""

    def __init__(self, job, stdio):
        self.argv = job["argv"]
        self.env = job["env"]
        self.limits = job["limits"]
        self.stdio = stdio

    def run(self):
        self.become_job_process()
        mode, target = python_invocation(self.argv)
        {"-c": self.run_code, "-m": self.run_module}.get(mode, self.run_script)(target)

    def run_code(self, text):
        self.ensure_faithful("")
        code = compile(text, "<string>", "exec", dont_inherit=True)
        main = self.start(["-c", *self.argv[3:]], "", fresh_main_module(BuiltinImporter))
        exec(code, main.__dict__)

    def run_module(self, name):
        import runpy

        self.ensure_faithful(os.getcwd())
        self.start(["-m", *self.argv[3:]], os.getcwd(), fresh_main_module(BuiltinImporter))
        runpy._run_module_as_main(name)  # type: ignore[attr-defined]  # what the interpreter runs for -m

    def run_script(self, target):
        path = os.path.abspath(target)
        source = read_script(path)
        directory = os.path.dirname(os.path.realpath(path))
        if source is None:
            self.fall_back()
        self.ensure_faithful(directory)
        code = compile(source, path, "exec", dont_inherit=True)
        main = self.start(
            self.argv[1:], directory, fresh_main_module(SourceFileLoader("__main__", path), path)
        )
        exec(code, main.__dict__)

    def become_job_process(self):
        try:
            enter_job_process(self.limits, self.stdio)
            set_dumpable(True)  # as any exec'd process is; the zygote itself stays out of reach
            set_process_name(os.path.basename(sys.executable))
            os.environ.clear()
            os.environ.update(self.env)
        except BaseException as exc:
            os.write(2, f"runner: cannot start the job: {type(exc).__name__}: {exc}\n".encode())
            os._exit(127)

    def ensure_faithful(self, directory):
        """Fall back to a real interpreter (never returns) when this child could not behave like one."""
        if user_site_exists() or shadows_imported_module(directory):
            self.fall_back()

    def fall_back(self):
        try:
            exec_program(self.argv, self.env)
        except OSError as exc:
            os.write(2, f"runner: cannot execute {self.argv[0]}: {type(exc).__name__}: {exc}\n".encode())
        os._exit(127)

    def start(self, argv, path0, main):
        sys.argv = argv
        sys.orig_argv = list(self.argv)
        sys.path.insert(0, path0)
        sys.modules["__main__"] = main
        return main


def without_zygote_frames(tb):
    """A job's traceback without this file's frames, as a fresh interpreter would print it."""
    while tb is not None and tb.tb_frame.f_globals is globals():
        tb = tb.tb_next
    return tb


def receive_job(control):
    """In the zygote's fresh child: read the job and its stdio fds, then drop the control socket."""
    header, fds, _flags, _address = socket.recv_fds(control, 4, 3)
    body = read_exact(control.fileno(), struct.unpack(">I", header)[0]) if len(header) == 4 else None
    control.close()
    if body is None or len(fds) != 3:
        os._exit(127)
    return PythonJob(json.loads(body), fds)


def zygote_main():
    """The zygote: import, then fork one child per request. Returns only in a child, with its job."""
    for name in [name for name in os.environ if name.startswith("PALAESTRA_")]:
        del os.environ[name]  # read into this module's settings at import; no job should see them
    if sys.path and sys.path[0] == "":
        del sys.path[0]  # `-c` put the current directory first: import only the system's modules
    set_process_name(ZYGOTE_NAME)  # first: a non-dumpable process's /proc files belong to root
    set_dumpable(False)  # before the slow imports: jobs run meanwhile, and must not reach our fds
    for name in ZYGOTE_PRELOAD:
        with contextlib.suppress(ImportError):
            __import__(name)
    # Children share these objects copy-on-write: frozen, no garbage collection in a child walks them,
    # which would copy every page (it made a child's exit 2-3 times slower).
    gc.freeze()
    control = socket.socket(fileno=ZYGOTE_FD)
    control.sendall(b"R")
    while control.recv(1) == b"F":
        try:
            pid = fork_with_retry()
        except OSError:
            pid = -1
        if pid == 0:
            return receive_job(control)
        control.sendall(struct.pack(">i", pid))
        if pid > 0:
            control.sendall(struct.pack(">i", os.waitpid(pid, 0)[1]))
    os._exit(0)  # the runner is gone


# -- the runner's side of the zygote --------------------------------------------------------------------


class Zygote:
    """The runner's handle on its fork server: start it, get children from it, replace it when it fails."""

    def __init__(self, source):
        self.source = source  # this file's text, or None where it cannot be found
        self.executable = which("python3", DEFAULT_PATH)  # what a job's `python3` runs
        self.pid = 0
        self.pidfd = -1
        self.control: socket.socket | None = None
        self.ready = False
        self.failed_starts = 0

    def ensure_started(self):
        if self.pid or not self.source or not self.executable:
            return
        if self.failed_starts >= ZYGOTE_MAX_FAILED_STARTS:
            return
        ours, theirs = socket.socketpair()
        stdin_r, stdin_w = os.pipe()
        try:
            pid = os.fork()
        except OSError:  # the pid limit: try again after the next job
            for fd in (stdin_r, stdin_w):
                os.close(fd)
            ours.close()
            theirs.close()
            return
        if pid == 0:
            self._become_zygote(theirs.fileno(), stdin_r)
        os.close(stdin_r)
        os.close(stdin_w)  # the zygote's stdin is an empty pipe, as a job's is
        theirs.close()
        self.pid, self.control, self.ready = pid, ours, False
        REAPER.watch(pid)
        try:
            self.pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            self.pidfd = -1

    def _become_zygote(self, control_fd, stdin_r):
        try:
            os.setsid()
            os.dup2(stdin_r, 0)
            os.dup2(2, 1)  # pipes, like a job's stdout and stderr
            os.dup2(control_fd, ZYGOTE_FD)
            os.set_inheritable(ZYGOTE_FD, True)
            os.closerange(ZYGOTE_FD + 1, MAX_FD)
            os.chdir("/")
            reset_signals()
            settings = {k: v for k, v in os.environ.items() if k.startswith("PALAESTRA_")}  # WORKDIR...
            env = dict(BASE_ENV, HOME=ZYGOTE_HOME, **settings, **{ZYGOTE_ROLE: "1"})
            os.execve(self.executable, ["python3", "-c", self.source], env)
        finally:
            os._exit(127)

    @property
    def channel(self) -> socket.socket:
        assert self.control is not None, "the zygote is not running"
        return self.control

    def serves(self, argv, env):
        """Whether `argv` under `env` may take the fast path now."""
        if not self.pid or python_invocation(argv) is None or not starts_interpreter_alike(env):
            return False
        if which(argv[0], env.get("PATH", os.defpath)) != self.executable:
            return False
        if not self.ready:
            if not readable(self.channel, 0):
                return False  # still starting: this job is exec'd
            if self.channel.recv(1) != b"R":
                self.discard(failed_start=True)
                return False
            self.ready, self.failed_starts = True, 0
        return True

    def fork(self, job, stdio):
        """The pid of a child of the zygote that runs `job`, or 0 when the zygote cannot give one."""
        try:
            self.channel.sendall(b"F")
            pid = self.read_int()
            if pid is None or pid <= 0:
                return 0
            message = frame(job)
            sent = socket.send_fds(self.channel, [message], list(stdio))
            self.channel.sendall(message[sent:])
        except OSError:
            self.discard()
            return 0
        return pid

    def read_int(self, timeout=ZYGOTE_ANSWER_SECONDS):
        """The zygote's next 4-byte answer, or None (and the zygote discarded) when it has none."""
        data = b""
        deadline = time.monotonic() + timeout
        while len(data) < 4:
            if not readable(self.channel, max(0.0, deadline - time.monotonic())):
                self.discard()
                return None
            chunk = self.channel.recv(4 - len(data))
            if not chunk:
                self.discard()
                return None
            data += chunk
        return struct.unpack(">i", data)[0]

    def discard(self, failed_start=False):
        """Kill the zygote (dead, stopped, or in the way of a sweep); a fresh one starts after the job."""
        if self.pid:
            with contextlib.suppress(OSError):
                if self.pidfd >= 0:  # safe against the pid being reused once it was reaped
                    signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
                else:
                    os.kill(self.pid, signal.SIGKILL)
            if REAPER.status_of(self.pid) is None:  # not reaped yet, so the pid is still the zygote's
                os.waitpid(self.pid, 0)
            REAPER.forget(self.pid)
        if self.pidfd >= 0:
            os.close(self.pidfd)
        if self.control is not None:
            self.control.close()
        self.pid, self.pidfd, self.control, self.ready = 0, -1, None, False
        self.failed_starts += failed_start

    def is_process(self, pid):
        """Whether `pid` is this zygote (and not some process that reused the number of a dead one)."""
        if not self.pid or pid != self.pid:
            return False
        stat = process_stat(pid)
        return stat is not None and stat[0] == os.getpid()


# -- the two kinds of running job -----------------------------------------------------------------------


class ExecJob:
    """A job the runner forked and exec'd itself."""

    via = "exec"

    def __init__(self, pid, exec_error):
        self.pid = pid
        self.exec_error = exec_error
        self.exit_fd: int | None
        try:
            self.exit_fd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            self.exit_fd = None  # poll the child with a short timeout instead

    def exit_status(self):
        status = REAPER.status_of(self.pid)
        return None if status is None else ("exit", status)

    def stop(self):
        kill_group(self.pid)
        if REAPER.status_of(self.pid) is None:  # not reaped yet, so the pid is still the job's
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)
        REAPER.forget(self.pid)  # reaped with the orphans from now on
        if self.exit_fd is not None:
            os.close(self.exit_fd)


class ForkedJob:
    """A job run by a child of the zygote; the zygote reports its wait status."""

    via = "fork"
    exec_error = b""

    def __init__(self, pid, zygote):
        self.pid = pid
        self.zygote = zygote
        self.exit_fd = zygote.control.fileno()
        self.reported = False

    def exit_status(self):
        control = self.zygote.control
        if control is not None and not readable(control, 0):
            return None
        self.reported = True  # or the zygote is gone, and with it the job's status
        status = self.zygote.read_int() if control is not None else None
        return ("lost", None) if status is None else ("exit", status)

    def stop(self):
        kill_group(self.pid)
        if not self.reported:
            # Not reaped yet, so the pid is still the job's; it may not have made its own group yet.
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)
            if self.zygote.control is not None:
                self.zygote.read_int()  # the report that follows the kill; a silent zygote is discarded


def kill_group(pid):
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)


# -- cleaning up after a job ----------------------------------------------------------------------------


def leftovers(zygote):
    """Pids in our PID namespace other than init, the runner and its zygote."""
    me = os.getpid()
    return [
        int(p)
        for p in os.listdir("/proc")
        if p.isdigit() and int(p) not in (1, me) and not zygote.is_process(int(p))
    ]


def sweep(job_group, zygote, bound=2.0):
    """Wait until the job's processes are gone; if any left its process group, kill everything."""
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        REAPER.reap()
        rest = leftovers(zygote)
        if not rest:
            return
        if any((process_stat(pid) or (0, job_group))[1] != job_group for pid in rest):
            break  # a daemon that left the group (setsid), or a leftover from before
        kill_group(job_group)
        time.sleep(0.001)
    zygote.discard()  # kill(-1) would take it anyway; a fresh one is started after the job
    kill_everything(bound)


def kill_everything(bound):
    """Kill every process we may signal in our PID namespace and wait until they are reaped (by us as
    the namespace's init on the built-in backends)."""
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            os.kill(-1, signal.SIGKILL)  # spares init (pid 1) and ourselves
        REAPER.reap()
        if not [p for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, os.getpid())]:
            return
        time.sleep(0.002)


# -- running one job ------------------------------------------------------------------------------------


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


def start_exec_job(argv, env, limits, stdio):
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    pid = fork_with_retry()
    if pid == 0:
        exec_child(limits, argv, env, stdio, err_w)
    REAPER.watch(pid)  # before anything reaps: its status is the job's result
    os.close(err_w)
    exec_error = b""
    while True:
        chunk = os.read(err_r, 4096)  # EOF once exec succeeded (close-on-exec) or the child died
        if not chunk:
            break
        exec_error += chunk
    os.close(err_r)
    return ExecJob(pid, exec_error)


def pump(job, deadline, stdin_w, stdin_data, captures, child_exited):
    """Feed stdin, collect output until the job exits: ("exit", waitstatus) or why it was cut short.

    `child_exited` is the SIGCHLD wake-up pipe: orphans the job leaves are reaped while it runs.
    """
    poller = select.poll()
    poller.register(child_exited, select.POLLIN)
    for fd in captures:
        poller.register(fd, select.POLLIN)
    if job.exit_fd is not None:
        poller.register(job.exit_fd, select.POLLIN)
    if stdin_data:
        os.set_blocking(stdin_w, False)
        poller.register(stdin_w, select.POLLOUT)
    else:
        os.close(stdin_w)
        stdin_w = None
    open_outputs = set(captures)
    next_stop_check = time.monotonic() + STOP_CHECK_SECONDS
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return ("timeout", None)
            outcome = job.exit_status()
            if outcome is not None:
                return outcome
            now = time.monotonic()
            if now >= next_stop_check:
                next_stop_check = now + STOP_CHECK_SECONDS
                stopped = is_stopped(job.pid)
            else:
                stopped = False
            if stopped:
                # Only the job can stop its own process: waiting for the wall-clock limit would let it
                # hold the sandbox (and a grader) for the whole budget.
                return ("stopped", None)
            wait_ms = min(remaining, STOP_CHECK_SECONDS) * 1000
            if job.exit_fd is None:
                wait_ms = min(wait_ms, 5)
            for fd, _event in poller.poll(wait_ms):
                if fd == child_exited:
                    drain_wakeups(child_exited)
                    REAPER.reap()
                elif fd == stdin_w:
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


def drain_wakeups(fd):
    with contextlib.suppress(BlockingIOError):
        while os.read(fd, CHUNK):
            pass


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


def starved(usage):
    """Whether a job that ran out of wall-clock time was kept off the CPU by the host rather than slow."""
    cpu, waited, wall = usage
    return cpu < STARVED_CPU_SHARE * wall and waited > STARVED_WAIT_SHARE * wall


def classify(outcome, limits, oom_before, stderr, usage):
    kind, wait_status = outcome
    if kind == "timeout":
        cpu, waited, _wall = usage
        if starved(usage):
            return (
                "timeout",
                None,
                (
                    f"host overload: wall-clock limit reached after only {cpu:.2f} s of CPU in the "
                    f"sandbox while the job waited {waited:.2f} s for a CPU"
                ),
            )
        return "timeout", None, f"wall-clock limit of the job reached ({cpu:.2f} s of CPU used)"
    if kind == "stopped":
        return "killed", None, "the job's process was stopped by a signal (SIGSTOP); it was killed"
    if kind == "output_limit":
        return "output_limit", None, f"output exceeded {limits['output_bytes']} bytes"
    if kind == "lost":
        return "killed", None, "the program killed the sandbox's Python fork server (its parent)"
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


# -- the runner -----------------------------------------------------------------------------------------


class Runner:
    def __init__(self):
        # Move the protocol off fds 0/1 so no job can read or write the runner's channel.
        self.proto_in = os.dup(0)
        self.proto_out = os.dup(1)
        os.set_inheritable(self.proto_in, False)
        os.set_inheritable(self.proto_out, False)
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        os.close(devnull)
        self.zygote = Zygote(own_source())
        self.child_exited = -1

    def serve(self):
        # Dumpable no more before any job exists: jobs run as our user, and as the container's init we hold
        # its stdio (the host's channel), which /proc/1/fd would otherwise hand to them.
        set_dumpable(False)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a job's SIGINT must not end the runner
        self.child_exited = wake_on_child_exit()
        os.makedirs(WORKDIR, exist_ok=True)
        self.zygote.ensure_started()
        handlers = {"write": op_write, "read": op_read, "exec": self.op_exec}
        while True:
            req = read_message(self.proto_in)
            if req is None:
                return
            op = req.get("op")
            try:
                reply = {"ok": True, "pid": os.getpid()} if op == "ping" else handlers[op](req)
            except Exception as exc:
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            write_all(self.proto_out, frame(reply))

    def op_exec(self, req):
        limits = req["limits"]
        argv = req["argv"]
        env = dict(BASE_ENV, **(req.get("env") or {}))
        stdin_data = base64.b64decode(req.get("stdin", ""))
        stdin_r, stdin_w = os.pipe()
        stdout_r, stdout_w = os.pipe()
        stderr_r, stderr_w = os.pipe()
        stdio = (stdin_r, stdout_w, stderr_w)
        oom_before = oom_kills()
        cpu_before = self.sandbox_cpu_seconds()
        started = time.monotonic()
        job = self.fork_python_job(argv, env, limits, stdio) or start_exec_job(argv, env, limits, stdio)
        for fd in stdio:
            os.close(fd)

        captures = {stdout_r: Capture(limits["output_bytes"]), stderr_r: Capture(limits["output_bytes"])}
        deadline = started + float(req["timeout"])
        outcome = pump(job, deadline, stdin_w, stdin_data, captures, self.child_exited)
        wall = time.monotonic() - started
        waited = cpu_wait_seconds(job.pid) if outcome[0] == "timeout" else 0.0
        job.stop()
        if SWEEP:
            sweep(job.pid, self.zygote)
        drain(captures)
        REAPER.reap()
        if self.zygote.pid and is_stopped(self.zygote.pid):
            self.zygote.discard()  # stopped by the job (`kill -STOP -1`): it would stall the next job
        cpu = self.sandbox_cpu_seconds() - cpu_before
        self.zygote.ensure_started()
        stdout, stderr = captures[stdout_r], captures[stderr_r]
        if job.exec_error:
            stderr.add(b"runner: cannot execute %s: %s\n" % (argv[0].encode(), job.exec_error))
        status, exit_code, detail = classify(outcome, limits, oom_before, stderr.value(), (cpu, waited, wall))
        return {
            "ok": True,
            "status": status,
            "exit_code": exit_code,
            "stdout": base64.b64encode(stdout.value()).decode(),
            "stderr": base64.b64encode(stderr.value()).decode(),
            "stdout_truncated": stdout.truncated,
            "stderr_truncated": stderr.truncated,
            "wall": wall,
            "cpu": cpu,
            "cpu_wait": waited,
            "overloaded": outcome[0] == "timeout" and starved((cpu, waited, wall)),
            "detail": detail,
            "via": job.via,
        }

    def sandbox_cpu_seconds(self):
        """CPU time used in the sandbox so far, when no job runs (before one starts, after its sweep).

        Then only the runner and its fork server live: every other process was reaped by one of them,
        and its time is in their children's times (orphans are re-parented to the runner, the init).
        """
        own = os.times()
        total = own.user + own.system + own.children_user + own.children_system
        return total + (process_cpu_seconds(self.zygote.pid) if self.zygote.pid else 0.0)

    def fork_python_job(self, argv, env, limits, stdio):
        if not self.zygote.serves(argv, env):
            return None
        pid = self.zygote.fork({"argv": argv, "env": env, "limits": limits}, stdio)
        return ForkedJob(pid, self.zygote) if pid else None


def own_source():
    """This file's text: the `-c` argument we were started with (the zygote runs the same source)."""
    argv = getattr(sys, "orig_argv", [])
    return argv[argv.index("-c") + 1] if "-c" in argv[:-1] else None


if __name__ == "__main__":
    if os.environ.get(ZYGOTE_ROLE) == "1":
        JOB = zygote_main()  # returns only in a forked child
        try:
            JOB.run()
        except BaseException as exc:
            # Re-raised from module level, the exception gains no frame of ours: the interpreter prints
            # it, runs atexit handlers and exits (1, SystemExit's code, or by SIGINT) as for the program.
            exc.__traceback__ = without_zygote_frames(exc.__traceback__)
            raise
    else:
        Runner().serve()
        sys.exit(0)
