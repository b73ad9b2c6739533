"""The grading supervisor that runs INSIDE the sandbox (standard library only; copied in per grading).

Why it is shaped like this (the submission is hostile and shares the sandbox with this process):

* The test data (expected outputs, test code) is read from `spec.json`, which is then deleted together
  with this script before any submission code runs: the data lives only in this process's memory, and
  this process makes itself non-dumpable so that same-user processes cannot read /proc/<pid>/mem, environ
  or fds.
* Each test runs the submission in its own child process, in a fresh scratch directory, with rlimits
  (CPU, address space, file size). CPU time is the limit; the wall clock is only a generous backstop, and
  when it fires while the sandbox got less CPU than the limit and the program waited for a CPU, the test is
  reported as `overload` (the host's doing), never as the submission's timeout.
* Between tests the sandbox is brought back to what it held before the first one: every other process in
  the sandbox's PID namespace is killed (processes that left the test's session with `setsid` included)
  and everything written into the work dir or /tmp is removed, so each test has the whole pid, size and
  inode allowance of the sandbox, whatever the previous one did.
* The test's stdin, stdout and stderr are anonymous files (memfd): the submission cannot replace them (with
  a FIFO, say) or fill the work dir through them, and this process never opens a path it chose.
* Function tests run their assertions HERE, in the trusted process. The child only imports the submission
  and answers calls; arguments and return values cross a pipe as plain data (numbers, strings, lists,
  tuples, dicts, sets, bytes), so a submission cannot return an object whose `__eq__` always says yes,
  monkeypatch the assertions, or exit early "successfully": a dead child fails the test.
* Results go to this process's stdout, each line tagged with a nonce that arrives on stdin (never in argv
  or the environment, which other processes can read) and is never given to a child. A run that is cut
  short leaves tests without results, which the grader counts as failed.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import json
import math
import os
import resource
import select
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

# The plain-data codec, shared by this process and the child (which gets it as source text).
CODEC_SOURCE = r"""
import base64 as _b64
import math as _math

def encode_value(x, depth=0):
    if depth > 200:
        raise TypeError("value nested too deeply")
    if x is None or isinstance(x, bool):
        return None if x is None else bool(x)
    if isinstance(x, int):
        return int(x)
    if isinstance(x, float):
        f = float(x)
        return f if _math.isfinite(f) else {"f": repr(f)}
    if isinstance(x, str):
        return str(x)
    if isinstance(x, list):
        return [encode_value(v, depth + 1) for v in x]
    if isinstance(x, tuple):
        return {"t": [encode_value(v, depth + 1) for v in x]}
    if isinstance(x, dict):
        return {"d": [[encode_value(k, depth + 1), encode_value(v, depth + 1)] for k, v in x.items()]}
    if isinstance(x, frozenset):
        return {"fs": [encode_value(v, depth + 1) for v in x]}
    if isinstance(x, set):
        return {"s": [encode_value(v, depth + 1) for v in x]}
    if isinstance(x, (bytes, bytearray)):
        return {"b": _b64.b64encode(bytes(x)).decode("ascii")}
    if isinstance(x, complex):
        return {"c": [x.real, x.imag]}
    raise TypeError("cannot pass a value of type %s between the tests and the submission" % type(x).__name__)

def decode_value(x):
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if isinstance(x, list):
        return [decode_value(v) for v in x]
    if isinstance(x, dict) and len(x) == 1:
        (tag, body), = x.items()
        if tag == "t":
            return tuple(decode_value(v) for v in body)
        if tag == "d":
            return {decode_value(k): decode_value(v) for k, v in body}
        if tag == "s":
            return {decode_value(v) for v in body}
        if tag == "fs":
            return frozenset(decode_value(v) for v in body)
        if tag == "b":
            return _b64.b64decode(body)
        if tag == "c":
            return complex(body[0], body[1])
        if tag == "f":
            return float(body)
    raise ValueError("malformed value")
"""

# The child: imports the submission and answers calls. It is untrusted once the submission is imported.
CHILD_SOURCE = (
    CODEC_SOURCE
    + r"""
import importlib.util, json, os, sys, traceback
sys.set_int_max_str_digits(0)
_req = os.fdopen(int(sys.argv[1]), "rb")
_rep = os.fdopen(int(sys.argv[2]), "wb")
def _send(obj):
    _rep.write(json.dumps(obj).encode() + b"\n")
    _rep.flush()
try:
    _spec = importlib.util.spec_from_file_location("solution", sys.argv[3])
    _mod = importlib.util.module_from_spec(_spec)
    sys.modules["solution"] = _mod
    _spec.loader.exec_module(_mod)
except BaseException as e:
    _send({"ready": False, "error": "".join(traceback.format_exception_only(type(e), e)).strip()})
    sys.exit(1)
_send({"ready": True, "names": [n for n, v in vars(_mod).items() if callable(v) and not n.startswith("_")]})
for _line in _req:
    _call = json.loads(_line)
    try:
        _value = getattr(_mod, _call["fn"])(*decode_value(_call["args"]), **decode_value(_call["kwargs"]))
        _reply = {"ok": encode_value(_value)}
    except BaseException as e:
        _reply = {"raise": [c.__name__ for c in type(e).__mro__], "msg": str(e)[:2000]}
    _send(_reply)
"""
)

_codec: dict[str, Any] = {}
exec(CODEC_SOURCE, _codec)
encode_value: Callable[[Any], Any] = _codec["encode_value"]
decode_value: Callable[[Any], Any] = _codec["decode_value"]

REPLY_LIMIT = 32 << 20


class SubmissionFailure(BaseException):
    """The submission crashed, timed out or broke the protocol during a test.

    A BaseException, so that an `except Exception` in test code cannot swallow it.
    """

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit // 2] + " ... " + text[-limit // 2 :]


def make_non_dumpable() -> None:
    """PR_SET_DUMPABLE=0: other processes of this user can no longer read this one's memory or fds."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)
    except Exception as exc:  # a minimal image without ctypes: the nonce and deleted files still hold
        print(f"supervisor: cannot make itself non-dumpable: {exc}", file=sys.stderr)


def child_limits(cpu_seconds: float, memory_mb: int, file_bytes: int) -> Callable[[], None]:
    def apply() -> None:
        cpu = max(1, math.ceil(cpu_seconds))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))
        if memory_mb > 0:
            limit = memory_mb << 20
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def wait_until(proc: subprocess.Popen[bytes], deadline: float) -> bool:
    """Wait for the process until the deadline; False when it is still running."""
    try:
        proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        return True
    except subprocess.TimeoutExpired:
        return False


def anonymous_file(data: bytes = b"") -> int:
    """A file descriptor of a file without a name, holding `data`, positioned at its start."""
    try:
        fd = os.memfd_create("palaestra-test", os.MFD_CLOEXEC)
    except (AttributeError, OSError):  # no memfd: an unlinked temporary file is as unreachable
        with tempfile.TemporaryFile() as handle:
            fd = os.dup(handle.fileno())
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def read_fd(fd: int, limit: int) -> str:
    """The first `limit` + 1 bytes of a file we hold open (never reopened by a name)."""
    try:
        data = os.pread(fd, limit + 1, 0)
    except OSError:
        return ""
    return data.decode("utf-8", "replace")


# ---------------------------------------------------------------- time: CPU is the limit, wall a backstop

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
STARVED_WAIT_SHARE = 0.3  # of the backstop's wall time spent waiting for a CPU


def stat_fields(pid: int | str) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def sandbox_cpu_seconds() -> float:
    """CPU time of every process in the sandbox's PID namespace, including reaped ones (cutime, cstime)."""
    ticks = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = stat_fields(entry)
            if fields is not None:
                ticks += sum(int(x) for x in fields[11:15])
    return ticks / CLOCK_TICKS


def cpu_wait_seconds(pid: int) -> float:
    """How long a process has waited on a run queue for a CPU (0 where the kernel does not say)."""
    try:
        with open(f"/proc/{pid}/schedstat") as handle:
            return int(handle.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def backstop_fired(pid: int, started: float, cpu_before: float, cpu_limit: float) -> tuple[str, str]:
    """The outcome of a test whose wall-clock backstop fired (call before killing the process).

    Everything the submission runs is in the sandbox, so if the sandbox as a whole used less CPU than the
    test's limit while the program waited for a CPU, the host starved it: `overload`, not the program's
    timeout. A program that sleeps, blocks or stops itself waits for no CPU: its own timeout.
    """
    wall = time.monotonic() - started
    cpu = sandbox_cpu_seconds() - cpu_before
    waited = cpu_wait_seconds(pid)
    if cpu < cpu_limit and waited > STARVED_WAIT_SHARE * wall:
        return "overload", (
            f"host overload: the wall-clock backstop ({wall:.1f} s) fired after {cpu:.2f} s of CPU (limit "
            f"{cpu_limit:g} s) while the program waited {waited:.2f} s for a CPU"
        )
    return "timeout", f"time limit exceeded (wall-clock backstop after {wall:.1f} s, {cpu:.2f} s of CPU used)"


# ---------------------------------------------------------------- the sandbox between tests


def kill_other_processes(bound: float = 5.0) -> None:
    """Kill every process of the sandbox the submission may have started, and wait until they are gone.

    Those are all processes that started after this one (whatever session or group they moved to, e.g.
    daemons that called `setsid`): the runner, its fork server and our ancestors are older and are spared.
    The runner (the PID namespace's init) reaps the orphans.
    """
    me = os.getpid()
    born = start_time(me)
    deadline = time.monotonic() + bound
    while True:
        others = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != me and start_time(int(entry)) >= born:
                others.append(int(entry))
                with contextlib.suppress(OSError):
                    os.kill(int(entry), signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        if not others:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(others)} processes of the submission did not die")
        time.sleep(0.002)


def start_time(pid: int) -> int:
    """When a process started (clock ticks since boot); -1 when it is gone."""
    fields = stat_fields(pid)
    return -1 if fields is None else int(fields[19])


class Workspace:
    """The writable directories as they were before the first test; `restore` brings them back."""

    def __init__(self, roots: list[str]) -> None:
        self.roots = [r for r in roots if os.path.isdir(r)]
        self.known: dict[str, tuple[int, int, int]] = {}  # path -> (inode, mode, size)
        for root in self.roots:
            for directory, subdirs, files in os.walk(root):
                for name in [directory, *(os.path.join(directory, n) for n in subdirs + files)]:
                    st = os.lstat(name)
                    self.known[name] = (st.st_ino, st.st_mode, st.st_size)

    def restore(self) -> None:
        """Remove what is new (by path and inode), truncate what grew, give directories their mode back."""
        pending = list(self.roots)
        while pending:
            directory = pending.pop()
            mode = stat.S_IMODE(self.known[directory][1])
            current = os.lstat(directory)
            if stat.S_IMODE(current.st_mode) != mode and current.st_uid == os.geteuid():
                os.chmod(directory, mode)  # the submission may have made its directory unreadable
            for entry in os.scandir(directory):
                st = entry.stat(follow_symlinks=False)
                known = self.known.get(entry.path)
                if known is None or known[0] != st.st_ino or stat.S_IFMT(known[1]) != stat.S_IFMT(st.st_mode):
                    remove_tree(entry.path)
                elif stat.S_ISDIR(st.st_mode):
                    pending.append(entry.path)
                elif stat.S_ISREG(st.st_mode) and st.st_size > known[2]:
                    os.truncate(entry.path, known[2])


def remove_tree(path: str) -> None:
    """Remove a file or a directory tree the submission made (any mode; iterative, so any depth)."""
    if not stat.S_ISDIR(os.lstat(path).st_mode):
        os.unlink(path)
        return
    stack = [path]
    while stack:
        top = stack[-1]
        os.chmod(top, stat.S_IRWXU)
        subdirs = []
        for entry in os.scandir(top):
            if entry.is_dir(follow_symlinks=False):
                subdirs.append(entry.path)
            else:
                os.unlink(entry.path)
        if subdirs:
            stack += subdirs
        else:
            os.rmdir(top)
            stack.pop()


def died_status(returncode: int | None, stderr: str) -> tuple[str, str]:
    """Classify a child that ended without answering: memory, cpu time, output limit or a crash."""
    if "MemoryError" in stderr or "bad_alloc" in stderr:
        return "memory", "memory limit exceeded"
    if returncode == -signal.SIGXCPU or returncode == -signal.SIGKILL:
        return "timeout", "time limit exceeded (CPU)"
    if returncode == -signal.SIGXFSZ:
        return "output_limit", "output limit exceeded"
    if returncode is not None and returncode < 0:
        return "crash", f"killed by signal {signal.Signals(-returncode).name}"
    return "crash", f"exited with code {returncode}"


# ---------------------------------------------------------------- function tests


class Child:
    """One submission process answering calls over a pipe."""

    def __init__(self, spec: dict[str, Any], scratch: str) -> None:
        self.started = time.monotonic()
        self.cpu_before = sandbox_cpu_seconds()
        self.cpu_limit = float(spec["time_limit"])
        self.deadline = self.started + spec["wall_seconds"]
        self.stdout_fd = anonymous_file()
        self.stderr_fd = anonymous_file()
        req_r, self.req_w = os.pipe()
        self.rep_r, rep_w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [spec["python"], "-I", "-c", CHILD_SOURCE, str(req_r), str(rep_w), spec["module_path"]],
                cwd=scratch,
                stdin=subprocess.DEVNULL,
                stdout=self.stdout_fd,
                stderr=self.stderr_fd,
                pass_fds=(req_r, rep_w),
                start_new_session=True,
                preexec_fn=child_limits(spec["time_limit"], spec["memory_mb"], spec["output_limit"]),
            )
        finally:
            os.close(req_r)
            os.close(rep_w)
        self.buffer = b""
        self.failure: SubmissionFailure | None = None
        self.names: list[str] = []

    def _fail(self, status: str, message: str) -> SubmissionFailure:
        self.failure = SubmissionFailure(status, message)
        return self.failure

    def _died(self) -> SubmissionFailure:
        wait_until(self.proc, time.monotonic() + 1.0)
        stderr = self.stderr(4000)
        status, why = died_status(self.proc.poll(), stderr)
        return self._fail(status, f"{why}\n{stderr[-1500:]}".strip())

    def receive(self) -> dict[str, Any]:
        while b"\n" not in self.buffer:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise self._fail(
                    *backstop_fired(self.proc.pid, self.started, self.cpu_before, self.cpu_limit)
                )
            ready, _, _ = select.select([self.rep_r], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(self.rep_r, 1 << 16)
            if not chunk:
                raise self._died()
            self.buffer += chunk
            if len(self.buffer) > REPLY_LIMIT:
                raise self._fail("output_limit", "return value too large")
        line, self.buffer = self.buffer.split(b"\n", 1)
        try:
            message = json.loads(line)
            if not isinstance(message, dict):
                raise ValueError("not an object")
            return message
        except ValueError:
            raise self._fail("error", "the submission broke the test protocol") from None

    def start(self) -> None:
        hello = self.receive()
        if not hello.get("ready"):
            raise self._fail("error", f"importing the submission failed: {hello.get('error', '')}")
        self.names = [str(n) for n in hello.get("names", [])]

    def call(self, fn: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self.failure is not None:
            raise self.failure
        try:
            request = {"fn": fn, "args": encode_value(list(args)), "kwargs": encode_value(kwargs)}
        except TypeError as exc:
            raise ValueError(f"test passes an unsupported argument: {exc}") from None
        try:
            os.write(self.req_w, json.dumps(request).encode() + b"\n")
        except OSError:
            raise self._died() from None
        reply = self.receive()
        if "ok" in reply:
            try:
                return decode_value(reply["ok"])
            except (ValueError, TypeError, KeyError):
                raise self._fail("error", "the submission returned a malformed value") from None
        raise rebuild_exception(reply)

    def stderr(self, limit: int) -> str:
        return read_fd(self.stderr_fd, limit)

    def close(self) -> None:
        kill_group(self.proc)
        for fd in (self.req_w, self.rep_r, self.stdout_fd, self.stderr_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


def rebuild_exception(reply: dict[str, Any]) -> BaseException:
    """The submission's exception as a builtin exception type, so `raises(ValueError)` tests work."""
    names = [str(n) for n in reply.get("raise", [])]
    message = str(reply.get("msg", ""))
    if names and names[0] in ("SystemExit", "KeyboardInterrupt", "GeneratorExit"):
        return SubmissionFailure("error", f"the submission raised {names[0]} ({message})")
    for name in names:
        candidate = getattr(builtins, name, None)
        if isinstance(candidate, type) and issubclass(candidate, Exception):
            try:
                return candidate(message)
            except Exception:
                continue
    return RuntimeError(f"{names[0] if names else 'exception'}: {message}")


class Raises:
    """A small stand-in for pytest.raises (pytest is not in the sandbox)."""

    def __init__(
        self, expected: type[BaseException] | tuple[type[BaseException], ...], match: str = ""
    ) -> None:
        self.expected = expected
        self.match = match

    def __enter__(self) -> Raises:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: object) -> bool:
        if kind is None:
            raise AssertionError(f"expected {self.expected} to be raised")
        if isinstance(value, SubmissionFailure) or not issubclass(kind, self.expected):
            return False
        if self.match:
            import re

            if not re.search(self.match, str(value)):
                raise AssertionError(f"exception message {str(value)!r} does not match {self.match!r}")
        return True


def approx(expected: float, rel: float = 1e-6, abs: float = 1e-12) -> Any:  # pytest's argument names
    class Approx:
        def __eq__(self, other: object) -> bool:
            return isinstance(other, (int, float)) and math.isclose(other, expected, rel_tol=rel, abs_tol=abs)

        def __repr__(self) -> str:
            return f"approx({expected!r})"

    return Approx()


class ExplainAsserts(ast.NodeTransformer):
    """`assert got == expected` -> a call reporting both sides; other asserts get their source as message."""

    def __init__(self, source: str) -> None:
        self.source = source

    def visit_Assert(self, node: ast.Assert) -> ast.stmt:
        text = ast.get_source_segment(self.source, node) or "assert"
        test = node.test
        if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq):
            left, right = test.left, test.comparators[0]
            if not contains_call(left) and contains_call(right):
                left, right = right, left
            call = ast.Call(ast.Name("__assert_eq__", ast.Load()), [left, right, ast.Constant(text)], [])
            return ast.copy_location(ast.Expr(call), node)
        if node.msg is None:
            node.msg = ast.Constant(text)
        return node


def contains_call(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Call) for n in ast.walk(node))


def make_assert_eq(limit: int) -> Callable[[Any, Any, str], None]:
    def assert_eq(got: Any, expected: Any, text: str) -> None:
        if not (got == expected):
            raise AssertionError(
                f"{text}\n  expected: {shorten(repr(expected), limit)}"
                f"\n  got:      {shorten(repr(got), limit)}"
            )

    return assert_eq


def compile_test(code: str, name: str) -> Any:
    tree = ast.fix_missing_locations(ExplainAsserts(code).visit(ast.parse(code)))
    return compile(tree, f"<test {name}>", "exec")


def run_function_test(spec: dict[str, Any], test: dict[str, Any], scratch: str) -> dict[str, Any]:
    limit = spec["report_chars"]
    child = Child(spec, scratch)
    try:
        child.start()

        def proxy(fn: str) -> Callable[..., Any]:
            def call(*args: Any, **kwargs: Any) -> Any:
                return child.call(fn, args, kwargs)

            call.__name__ = fn
            return call

        pytest_stub = type(sys)("pytest")
        pytest_stub.raises = Raises  # type: ignore[attr-defined]
        pytest_stub.approx = approx  # type: ignore[attr-defined]
        sys.modules["pytest"] = pytest_stub
        namespace: dict[str, Any] = {name: proxy(name) for name in child.names}
        namespace.update(
            {
                "__name__": "__palaestra_test__",
                "candidate": proxy(spec["entry_point"]),
                "raises": Raises,
                "approx": approx,
                "pytest": pytest_stub,
                "__assert_eq__": make_assert_eq(limit),
            }
        )
        exec(compile_test(spec["setup_code"], "setup"), namespace)
        before = set(namespace)
        exec(compile_test(test["code"], test["name"]), namespace)
        for name in sorted(set(namespace) - before):
            if name.startswith("test") and callable(namespace[name]):
                namespace[name]()
        if "check" in set(namespace) - before and callable(namespace["check"]):
            namespace["check"](namespace["candidate"])
        if child.failure is not None:  # the test code caught our failure: it still fails
            raise child.failure
        return {"status": "pass"}
    except SubmissionFailure as failure:
        stderr = child.stderr(limit)
        return {
            "status": failure.status,
            "message": shorten(failure.message, limit),
            "stderr": stderr[-limit:],
        }
    except AssertionError as exc:
        return {"status": "fail", "message": shorten(str(exc) or "assertion failed", limit)}
    except Exception as exc:
        stderr = child.stderr(limit)
        message = shorten(f"{type(exc).__name__}: {exc}", limit)
        return {"status": "error", "message": message, "stderr": stderr[-limit:]}
    finally:
        child.close()


# ---------------------------------------------------------------- stdin/stdout tests


def outputs_match(expected: str, got: str, checker: str, tolerance: float) -> bool:
    if checker == "exact":
        return expected == got
    want, have = expected.split(), got.split()
    if checker == "tokens" or len(want) != len(have):
        return want == have
    for a, b in zip(want, have, strict=True):
        if a == b:
            continue
        try:
            x, y = float(a), float(b)
        except ValueError:
            return False
        if not math.isclose(x, y, rel_tol=tolerance, abs_tol=tolerance):
            return False
    return True


def run_stdio_test(spec: dict[str, Any], test: dict[str, Any], scratch: str) -> dict[str, Any]:
    time_limit = test.get("time_limit") or spec["time_limit"]
    memory_mb = test.get("memory_mb") or spec["memory_mb"]
    stdio = [anonymous_file(test["input"].encode("utf-8")), anonymous_file(), anonymous_file()]
    try:
        return stdio_test_with(spec, test, scratch, time_limit, memory_mb, stdio)
    finally:
        for fd in stdio:
            os.close(fd)


def stdio_test_with(
    spec: dict[str, Any],
    test: dict[str, Any],
    scratch: str,
    time_limit: float,
    memory_mb: int,
    stdio: list[int],
) -> dict[str, Any]:
    limit = spec["report_chars"]
    cpu_before = sandbox_cpu_seconds()
    started = time.monotonic()
    proc = subprocess.Popen(
        spec["run_argv"],
        cwd=scratch,
        stdin=stdio[0],
        stdout=stdio[1],
        stderr=stdio[2],
        start_new_session=True,
        preexec_fn=child_limits(time_limit, memory_mb, spec["output_limit"]),
    )
    finished = wait_until(proc, started + time_limit * spec["wall_factor"] + 1.0)
    if not finished:
        status, message = backstop_fired(proc.pid, started, cpu_before, time_limit)
    kill_group(proc)
    seconds = round(time.monotonic() - started, 4)
    stderr = read_fd(stdio[2], 4000)
    if not finished:
        return {"status": status, "message": message, "seconds": seconds}
    if proc.returncode != 0:
        status, why = died_status(proc.returncode, stderr)
        return {"status": status, "message": why, "stderr": stderr[-limit:], "seconds": seconds}
    got = read_fd(stdio[1], spec["output_limit"])
    if outputs_match(test["output"], got, spec["checker"], spec["float_tolerance"]):
        return {"status": "pass", "seconds": seconds}
    return {
        "status": "fail",
        "message": "wrong answer",
        "input": shorten(test["input"], limit),
        "expected": shorten(test["output"], limit),
        "got": shorten(got, limit),
        "stderr": stderr[-limit:],
        "seconds": seconds,
    }


# ---------------------------------------------------------------- main


def load_spec(grade_dir: str) -> dict[str, Any]:
    """Read the spec, then delete it and this script: from here on the tests live only in memory."""
    spec_path = os.path.join(grade_dir, "spec.json")
    with open(spec_path, encoding="utf-8") as handle:
        spec: dict[str, Any] = json.load(handle)
    for name in os.listdir(grade_dir):
        os.unlink(os.path.join(grade_dir, name))
    return spec


def main() -> int:
    make_non_dumpable()
    nonce = sys.stdin.readline().strip()
    sys.stdin.close()
    sys.set_int_max_str_digits(0)
    grade_dir = os.path.abspath(sys.argv[1])
    spec = load_spec(grade_dir)
    submission_dir = os.path.abspath(spec["submission_dir"])
    spec["python"] = sys.executable
    spec["module_path"] = os.path.abspath(spec["module_path"])
    spec["run_argv"] = [
        part.replace("{dir}", submission_dir).replace("{python}", sys.executable) for part in spec["run_argv"]
    ]
    workspace = Workspace([os.getcwd(), tempfile.gettempdir()])
    print(f"{nonce}\tSTART", flush=True)
    runner = run_function_test if spec["style"] == "function" else run_stdio_test
    for index, test in enumerate(spec["tests"]):
        started = time.monotonic()
        try:
            # Before every test: nothing of the last one runs, and the sandbox holds what it held at first.
            kill_other_processes()
            workspace.restore()
            scratch = tempfile.mkdtemp(prefix=f"t{index}-", dir=grade_dir)
            result = runner(spec, test, scratch)
        except Exception as exc:  # the harness failed on this test: the grader decides whose failure it is
            result = {"status": "harness_error", "message": f"{type(exc).__name__}: {exc}"}
        result.setdefault("seconds", round(time.monotonic() - started, 4))
        result["index"] = index
        print(f"{nonce}\t{json.dumps(result)}", flush=True)
        if result["status"] == "overload":
            break  # the grading will be discarded as the host's failure: do not starve the host further
    with contextlib.suppress(Exception):  # leave the sandbox as the tests found it
        kill_other_processes()
        workspace.restore()
    print(f"{nonce}\tEND", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
