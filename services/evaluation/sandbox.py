"""Run untrusted Python (a model's answer with a benchmark's tests) in an isolated, limited subprocess.

Never call this from a service process: it is for ``orchestratex eval`` and the tests. Each run gets:

* **a separate process** started by ``sys.executable -I -S -B`` (isolated mode, no ``site``, no bytecode
  files), in a new session so the whole process group can be killed, with stdin on ``/dev/null``;
* **an empty environment** except ``PATH``, ``LANG``, and ``HOME``/``TMPDIR`` pointing at the run's
  directory, so the parent's secrets (``OPENROUTER_API_KEY``...) are never visible;
* **a fresh temporary directory** as its working directory, removed afterwards whatever happened (exit,
  timeout, cancellation of the awaiting task);
* **namespaces** when the kernel allows them (probed once per process, see :func:`isolation_available`):
  ``unshare`` with user (unless root), network, IPC and PID namespaces, so the program has no network (only
  a loopback that is down), cannot signal processes outside, and every process it could start dies with it;
* **an unprivileged user** when the parent is root and Python is usable by ``nobody`` (``setpriv``): only
  then do file permissions and ``RLIMIT_NPROC`` hold against a program that escapes the audit hook (as root,
  even inside a user namespace mapping root to root, files are root's and ``RLIMIT_NPROC`` does not apply);
* **resource limits** set by a small bootstrap before the program runs: address space (``memory_mb``), CPU
  time (``timeout_s`` + 1 s, then SIGKILL a second later), file size (4 MB), open files (64), processes
  (0: no fork, no thread, unless root), no core files; plus a wall-clock timeout after which the process
  group is killed;
* **an audit hook** (:func:`sys.addaudithook`, installed by the bootstrap before the program's code is
  executed) that refuses sockets, processes (``os.fork``, ``subprocess``, ``os.system``, ``os.exec*``,
  ``os.posix_spawn``, signals to other processes), native code (``ctypes``, ``mmap``, ``_posixsubprocess``,
  extension modules from outside the Python installation, building code objects), modules that reach files
  without an audit event (``sqlite3``, ``dbm``, ``readline``, ``curses``, POSIX shared memory, ``ssl``),
  tracing and sub-interpreters, links, ``..`` in paths, and any file access outside the run's directory
  except reads under the Python installation. A refused action raises :class:`PermissionError` in the
  program and the run's outcome is ``blocked``.

The audit hook is **defence in depth, not the boundary**: CPython's audit hooks are not a sandbox (a
crafted ``marshal`` payload or an interpreter bug reaches native code, and native code ignores them; where
``_posixsubprocess`` is built into the interpreter, as in Debian's, ``_imp.create_builtin`` gives back the
``fork_exec`` the bootstrap replaced). The boundary is the separate process with its empty environment and
temporary directory, the namespaces, the resource limits and, when available, the unprivileged user. What
a run had is in :attr:`SandboxResult.isolation`. Without namespaces (e.g. a container that forbids user
namespaces) a program that escapes the hook has the network and the user's files: run ``orchestratex
eval`` for code suites in a disposable container or VM then.

"Passed" means the program ran to its end (or called ``sys.exit(0)``): the bootstrap reports completion on
a separate pipe, so ``os._exit(0)`` before the tests run is not a pass. That report is protection against
accidents, not against a program written to forge it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "DEFAULT_LIMITS",
    "Outcome",
    "SandboxLimits",
    "SandboxResult",
    "isolation_available",
    "run_python",
]

logger = logging.getLogger(__name__)

Outcome = Literal["passed", "failed", "timeout", "memory", "blocked", "error"]
"""How a run ended; see :class:`SandboxResult`."""

_NOBODY = 65534
_DETAIL_CHARS = 300
_STATUS_BYTES = 16_000
_FILE_SIZE_BYTES = 4 * 1024 * 1024
_OPEN_FILES = 64
_WRITE_BUDGET = 64
"""Files opened for writing, directories made and renames allowed per run: bounds the disk a run can fill
(with ``RLIMIT_FSIZE``) and the work of removing its directory."""
_DRAIN_AFTER_EXIT_S = 2.0
_PROGRAM = "program.py"


@dataclass(frozen=True)
class SandboxLimits:
    """What one run may use."""

    timeout_s: float = 10.0
    """Wall clock; the whole process group is killed after it."""
    memory_mb: int = 512
    """Address space (``RLIMIT_AS``), including the interpreter's own (about 20 MB)."""
    max_output_bytes: int = 64_000
    """stdout and stderr kept (the first and last halves); the rest is read and dropped."""


DEFAULT_LIMITS = SandboxLimits()
"""The limits used when none are given."""


@dataclass(frozen=True)
class SandboxResult:
    """How a run ended.

    ``outcome``: ``passed`` (ran to its end, exit status 0), ``failed`` (an exception, a non-zero exit, a
    crash, or stopping before its end), ``timeout`` (wall clock or CPU time), ``memory`` (``MemoryError`` or
    killed for memory), ``blocked`` (the program attempted something the audit hook refuses; this wins over
    every other outcome), ``error`` (the sandbox itself could not run it).
    """

    outcome: Outcome
    returncode: int | None
    """Of the sandbox's direct child (``unshare`` when namespaces are used); None if it never started."""
    detail: str
    """Short, for people: ``passed``, the traceback's last line, ``timed out after 10 s``,
    ``blocked: network (socket.__new__)``... at most 300 characters."""
    seconds: float
    isolation: str
    """What protected this run, e.g. ``namespace+rlimits+audit`` (see :func:`isolation_available`)."""
    output: str = ""
    """stdout and stderr, interleaved, bounded by ``max_output_bytes`` (a marker says how much was dropped)."""


@dataclass(frozen=True)
class _Plan:
    """How runs are started on this machine (the probe's answer)."""

    prefix: tuple[str, ...]
    """Command that wraps the interpreter (``unshare ... --``, ``setpriv ... --``), or empty."""
    uid: int | None
    """The user the program runs as when it is not the parent's (root dropping to ``nobody``)."""
    label: str
    roots: tuple[str, ...]
    """Directories the program may read: the standard library (source, bytecode, extension modules)."""


def isolation_available() -> str:
    """The isolation layers runs get on this machine, joined by ``+``.

    ``namespace`` (network, IPC and, where possible, PID namespaces, in a user namespace unless root: no
    network, no processes outside), ``nobody`` (runs as an unprivileged user although the parent is root),
    ``rlimits`` and ``audit`` (always). Probed once per process by starting the interpreter under each
    candidate, best first; ``rlimits+audit`` when nothing else works (e.g. a container without user
    namespaces). As root without ``nobody``, a warning is logged once: only the audit hook then keeps the
    program from root's files.
    """
    return _plan().label


@functools.cache
def _plan() -> _Plan:
    unshare = shutil.which("unshare") if sys.platform.startswith("linux") else None
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    roots = _read_roots()
    candidates: list[_Plan] = []
    if os.geteuid() == 0 and setpriv:
        drop = (setpriv, f"--reuid={_NOBODY}", f"--regid={_NOBODY}", "--clear-groups", "--no-new-privs", "--")
        if unshare:
            # Root creates the namespaces itself, then drops to nobody inside them.
            ns = (unshare, "--net", "--ipc", "--pid", "--fork", "--kill-child", "--")
            candidates.append(_Plan((*ns, *drop), _NOBODY, "namespace+nobody+rlimits+audit", roots))
        candidates.append(_Plan(drop, _NOBODY, "nobody+rlimits+audit", roots))
    if unshare:
        user_ns = (unshare, "--user", "--map-root-user", "--net", "--ipc")
        candidates.append(
            _Plan((*user_ns, "--pid", "--fork", "--kill-child", "--"), None, "namespace+rlimits+audit", roots)
        )
        candidates.append(_Plan((*user_ns, "--"), None, "namespace+rlimits+audit", roots))
    for plan in candidates:
        if _works(plan):
            break
    else:
        plan = _Plan((), None, "rlimits+audit", roots)
    if os.geteuid() == 0 and plan.uid is None:
        logger.warning(
            "sandbox: running as root and Python is not usable by nobody (%s): programs run as root "
            "(in a user namespace when available); only the audit hook guards files and processes",
            sys.executable,
        )
    logger.info("sandbox isolation: %s", plan.label)
    return plan


def _works(plan: _Plan) -> bool:
    """Whether the interpreter starts under ``plan`` and finds the same installation."""
    command = [*plan.prefix, sys.executable, "-I", "-S", "-c", "import sys; print(sys.base_prefix)"]
    try:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=_base_env("/"),
            cwd="/",
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0 and done.stdout.decode(errors="replace").strip() == sys.base_prefix


def _base_env(home: str) -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": home, "TMPDIR": home}


def _read_roots() -> tuple[str, ...]:
    roots: set[str] = set()
    for key in ("stdlib", "platstdlib"):
        path = sysconfig.get_path(key)
        if path:
            roots.update({os.path.normpath(path), os.path.realpath(path)})
    roots.update(os.path.normpath(p) for p in sys.path if p.endswith(".zip"))
    return tuple(sorted(roots))


async def run_python(
    source: str, limits: SandboxLimits = DEFAULT_LIMITS, *, run_name: str = "__main__"
) -> SandboxResult:
    """Run ``source`` as a program in the sandbox and say how it ended (see the module docstring).

    ``run_name`` is the program's ``__name__``: another name keeps its ``if __name__ == "__main__":`` block
    from running (HumanEval's harness runs answers that way). Never raises for anything the program does;
    a failure of the sandbox itself is the outcome ``error``. Cancelling the awaiting task kills the
    process group, reaps it and removes the directory before the cancellation propagates.
    """
    started = time.monotonic()
    try:
        plan = await asyncio.to_thread(_plan)
    except Exception as exc:  # the probe itself failed: nothing can be run safely
        return SandboxResult("error", None, _clip(f"sandbox error: {exc!r}"), 0.0, "none")
    loop = asyncio.get_running_loop()
    directory: str | None = None
    proc: asyncio.subprocess.Process | None = None
    fds: list[int] = []
    transports: list[asyncio.BaseTransport] = []
    try:
        directory = _make_directory(plan)
        _write_program(directory, source, plan)
        out_read, out_write = os.pipe()
        fds += [out_read, out_write]
        status_read, status_write = os.pipe()
        fds += [status_read, status_write]
        config = {
            "program": _PROGRAM,
            "run_name": run_name,
            "status_fd": status_write,
            "tmp": directory,
            "roots": plan.roots,
            "rlimits": _rlimits(limits),
            "write_budget": _WRITE_BUDGET,
        }
        command = [*plan.prefix, sys.executable, "-I", "-S", "-B", "-c", f"_CONFIG = {config!r}\n{_BOOTSTRAP}"]
        proc = await asyncio.create_subprocess_exec(
            *command,
            stdin=subprocess.DEVNULL,
            stdout=out_write,
            stderr=subprocess.STDOUT,
            cwd=directory,
            env=_base_env(directory),
            start_new_session=True,
            pass_fds=(status_write,),
        )
        spawned = time.monotonic()
        for fd in (out_write, status_write):
            fds.remove(fd)
            os.close(fd)
        output = _Collector(loop, limits.max_output_bytes)
        status = _Collector(loop, _STATUS_BYTES)
        for fd, collector in ((out_read, output), (status_read, status)):
            fds.remove(fd)
            transports.append(await _connect(loop, fd, collector))

        timed_out = False
        try:
            await asyncio.wait_for(proc.wait(), timeout=limits.timeout_s)
        except TimeoutError:
            timed_out = True
            await _stop(proc)
        seconds = time.monotonic() - spawned
        # Anything left in the group (there should be nothing: forks are refused) dies with it.
        _kill_group(proc.pid)
        await asyncio.wait({output.closed, status.closed}, timeout=_DRAIN_AFTER_EXIT_S)
        return _classify(
            timed_out=timed_out,
            returncode=proc.returncode,
            status=status.text(),
            output=output.text(),
            limits=limits,
            seconds=seconds,
            isolation=plan.label,
        )
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        logger.warning("sandbox: could not run a program: %r", exc)
        return SandboxResult(
            "error",
            proc.returncode if proc is not None else None,
            _clip(f"sandbox error: {exc!r}"),
            time.monotonic() - started,
            plan.label,
        )
    finally:
        try:
            if proc is not None and proc.returncode is None:
                await _stop(proc)
        finally:
            # Even when cancelled again while reaping (asyncio's child watcher still reaps the child).
            for transport in transports:
                transport.close()
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            if directory is not None:
                _remove_tree(directory)


async def _connect(loop: asyncio.AbstractEventLoop, fd: int, collector: _Collector) -> asyncio.BaseTransport:
    """Read the pipe ``fd`` into ``collector``; the returned transport owns (and closes) the descriptor."""
    pipe = os.fdopen(fd, "rb", buffering=0)
    try:
        transport, _ = await loop.connect_read_pipe(lambda: collector, pipe)
    except BaseException:
        pipe.close()
        raise
    return transport


def _make_directory(plan: _Plan) -> str:
    """A fresh directory for one run (a few system calls: not worth a thread)."""
    directory = os.path.realpath(tempfile.mkdtemp(prefix="orx-sandbox-"))
    if plan.uid is not None:
        os.chown(directory, plan.uid, plan.uid)
    return directory


def _write_program(directory: str, source: str, plan: _Plan) -> None:
    program = os.path.join(directory, _PROGRAM)
    with open(program, "w", encoding="utf-8") as handle:
        handle.write(source)
    if plan.uid is not None:
        os.chown(program, plan.uid, plan.uid)


def _rlimits(limits: SandboxLimits) -> tuple[tuple[str, int, int], ...]:
    cpu = math.ceil(limits.timeout_s) + 1
    memory = limits.memory_mb * 1024 * 1024
    return (
        ("RLIMIT_CORE", 0, 0),
        ("RLIMIT_CPU", cpu, cpu + 1),
        ("RLIMIT_FSIZE", _FILE_SIZE_BYTES, _FILE_SIZE_BYTES),
        ("RLIMIT_NOFILE", _OPEN_FILES, _OPEN_FILES),
        ("RLIMIT_AS", memory, memory),
        # Last: the bootstrap needs no new process or thread, and from here on neither does the program.
        ("RLIMIT_NPROC", 0, 0),
    )


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """Kill the run's processes and reap them.

    Under ``unshare --fork`` the program is unshare's child: it is killed first so that unshare reaps it
    and exits (killing both at once would leave the program a zombie for the system's init to reap).
    """
    children = _children(proc.pid)
    for child in children:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(child, signal.SIGKILL)
    if children:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), _DRAIN_AFTER_EXIT_S)
    _kill_group(proc.pid)
    await proc.wait()


def _children(pid: int) -> list[int]:
    """The children of our (unreaped, so not reused) child ``pid``; empty where /proc does not say."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as handle:
            return [int(word) for word in handle.read().split()]
    except (OSError, ValueError):
        return []


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _remove_tree(path: str) -> None:
    """Remove the run's directory, even where the program took its own permissions away."""

    def retry(function: object, failed: str, _exc: object) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(failed), stat.S_IRWXU)
            os.chmod(failed, stat.S_IRWXU)
        with contextlib.suppress(OSError):
            if os.path.isdir(failed) and not os.path.islink(failed):
                shutil.rmtree(failed, ignore_errors=True)
            else:
                os.unlink(failed)

    try:
        if sys.version_info >= (3, 12):
            shutil.rmtree(path, onexc=retry)
        else:
            shutil.rmtree(path, onerror=retry)
    except OSError as exc:  # pragma: no cover - only when the filesystem itself fails
        logger.warning("sandbox: could not remove %s: %r", path, exc)


class _Collector(asyncio.Protocol):
    """Reads a pipe to its end, keeping the first and last ``limit // 2`` bytes and dropping the rest."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int) -> None:
        self._keep_head = max(limit, 0) // 2
        self._keep_tail = max(limit, 0) - self._keep_head
        self._head = bytearray()
        self._tail = bytearray()
        self._dropped = 0
        self.closed: asyncio.Future[None] = loop.create_future()

    def data_received(self, data: bytes) -> None:
        room = self._keep_head - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        if not data:
            return
        self._tail += data
        excess = len(self._tail) - self._keep_tail
        if excess > 0:
            del self._tail[:excess]
            self._dropped += excess

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def text(self) -> str:
        head = self._head.decode("utf-8", errors="replace")
        tail = self._tail.decode("utf-8", errors="replace")
        if self._dropped:
            return f"{head}\n[... {self._dropped} bytes dropped ...]\n{tail}"
        return head + tail


def _clip(text: str, limit: int = _DETAIL_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _classify(
    *,
    timed_out: bool,
    returncode: int | None,
    status: str,
    output: str,
    limits: SandboxLimits,
    seconds: float,
    isolation: str,
) -> SandboxResult:
    """The outcome from what the bootstrap reported on its pipe, the exit status and the clock."""
    ready = False
    blocked: tuple[str, str] | None = None
    result: list[str] | None = None
    for line in status.splitlines():
        fields = line.split("\t")
        if fields[0] == "ready":
            ready = True
        elif fields[0] == "blocked" and len(fields) >= 3 and blocked is None:
            blocked = (fields[1], fields[2])
        elif fields[0] == "result" and len(fields) >= 2:
            result = fields[1:]

    lines = output.rstrip("\n").split("\n")
    # With a PID namespace, unshare cannot re-raise a SIGKILL of its child on itself; it says so and exits 1.
    unshare_killed = returncode == 1 and lines[-1].startswith("unshare: sigprocmask")
    if unshare_killed:
        output = "\n".join(lines[:-1]) + "\n" if len(lines) > 1 else ""

    def done(outcome: Outcome, detail: str) -> SandboxResult:
        return SandboxResult(outcome, returncode, _clip(detail), round(seconds, 3), isolation, output)

    if blocked is not None:
        return done("blocked", f"blocked: {blocked[0]} ({blocked[1]})")
    if timed_out:
        return done("timeout", f"timed out after {limits.timeout_s:g} s")
    if result is not None:
        kind, rest = result[0], "\t".join(result[1:])
        if kind == "passed" and returncode == 0:
            return done("passed", "passed")
        if kind == "exception":
            return done("failed", rest or "exception")
        if kind == "memory":
            return done("memory", f"memory limit ({limits.memory_mb} MB) exceeded")
        if kind == "exit":
            return done("failed", f"exited with status {rest}")
        if kind == "cpu":
            return done("timeout", "CPU time limit exceeded")
        if kind == "error":
            return done("error", f"sandbox error: {rest}")
    if not ready:
        last = output.strip().splitlines()[-1:] or [f"exit status {returncode}"]
        return done("error", f"sandbox did not start: {last[0]}")
    memory_words = ("MemoryError", "Cannot allocate memory", "out of memory")
    if unshare_killed or returncode in (-signal.SIGKILL, -signal.SIGXCPU):
        if returncode != -signal.SIGXCPU and seconds < math.ceil(limits.timeout_s) + 0.5:
            return done("memory", "killed (out of memory)")
        return done("timeout", "CPU time limit exceeded")
    if returncode is not None and returncode < 0:
        if any(word in output for word in memory_words):
            return done("memory", f"memory limit ({limits.memory_mb} MB) exceeded")
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return done("failed", f"killed by {name}")
    if returncode == 0:
        return done("failed", "stopped before its end (exit status 0)")
    return done("failed", f"exited with status {returncode}")


# The bootstrap: run by the child interpreter with ``-c``, after a line ``_CONFIG = {...}``. It sets the
# limits, installs the audit hook, then executes the program in a fresh module and reports on the status
# pipe. The hook reads nothing global at run time (everything it uses is bound as a default argument, and
# methods are called unbound so that str/bytes subclasses cannot lie about a path), and nothing refers to
# it once installed, so the program cannot reach its state without frame or gc tricks that are refused.
_BOOTSTRAP = r'''
import builtins, os, resource, signal, sys


def _main(cfg):
    _exit = os._exit
    fd = os.dup(cfg["status_fd"])
    os.close(cfg["status_fd"])
    os.set_blocking(fd, False)

    def report(line, _write=os.write, _fd=fd, _encode=str.encode, _replace=str.replace):
        try:
            _write(_fd, _encode(_replace(line, "\n", " ")[:400] + "\n", "utf-8", "replace"))
        except OSError:
            pass

    for name, soft, hard in cfg["rlimits"]:
        try:
            resource.setrlimit(getattr(resource, name), (soft, hard))
        except (AttributeError, ValueError, OSError) as exc:
            report("result\terror\tcannot set " + name + ": " + str(exc))
            _exit(70)

    tmp = cfg["tmp"]
    writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def norm(path, _getcwd=os.getcwd, _isinstance=isinstance, _str=str, _bytes=bytes,
             _decode=bytes.decode, _startswith=str.startswith, _split=str.split, _join=str.join):
        if _isinstance(path, _bytes):
            path = _decode(path, "utf-8", "surrogateescape")
        elif _isinstance(path, _str):
            path = _join("", [path, ""])  # an exact str: a subclass's operators are never called
        else:
            return None  # a path-like object could answer differently to the hook and to the call
        if not _startswith(path, "/"):
            path = _getcwd() + "/" + path
        parts = []
        for part in _split(path, "/"):
            if part == "..":
                # Refused outright: resolved against a dir_fd= (which the open event does not show) or
                # through a symbolic link, it is not where it looks to be.
                return None
            if part != "" and part != ".":
                parts.append(part)
        return "/" + _join("/", parts)

    def under(path, roots, _startswith=str.startswith):
        for root in roots:
            if path == root or _startswith(path, root + "/"):
                return True
        return False

    def file_refusal(path, write, _norm=norm, _under=under, _tmp=(tmp,), _roots=tuple(cfg["roots"]),
                     _isinstance=isinstance, _int=int, _budget=[cfg["write_budget"]]):
        """None when allowed, else the reason (a file descriptor is allowed: it was opened through here)."""
        if path is None or _isinstance(path, _int):
            return None
        p = _norm(path)
        if p is None:
            return "path"
        if p == "/dev/null" or (p == "/dev/urandom" and write == 0):
            return None
        if _under(p, _tmp):
            if write:
                if _budget[0] <= 0:
                    return "too many writes"
                _budget[0] -= 1
            return None
        if write == 0 and _under(p, _roots):
            return None
        return "outside"

    def hook(event, args, _report=report, _norm=norm, _under=under, _file=file_refusal, _writes=writes,
             _roots=tuple(cfg["roots"]), _blocked=[False], _Err=PermissionError, _isinstance=isinstance,
             _int=int, _and=int.__and__, _startswith=str.startswith, _split=str.split, _join=str.join,
             _len=len, _repr=repr, _stat=os.stat, _Exception=Exception, _MemoryError=MemoryError,
             _RecursionError=RecursionError, _tmp=(tmp,),
             _quiet=frozenset(("exec", "compile", "builtins.id", "marshal.loads", "sys._getframe",
                               "object.__getattr__", "time.sleep", "function.__new__", "os.putenv",
                               "os.unsetenv", "sys.addaudithook", "builtins.input", "resource.setrlimit")),
             _process=frozenset(("os.system", "os.exec", "os.posix_spawn", "os.fork", "os.forkpty",
                                 "subprocess.Popen", "os.kill", "os.killpg", "signal.pthread_kill",
                                 "resource.prlimit", "pty.spawn")),
             _native=frozenset(("mmap.__new__", "code.__new__")),
             _interpreter=frozenset(("sys.settrace", "sys.setprofile", "gc.get_objects", "gc.get_referrers",
                                     "cpython.PyInterpreterState_New", "sys._current_frames")),
             _guarded=frozenset(("__code__", "__kwdefaults__", "__cantrace__")),
             # Native code, and modules that reach files or processes without an audit event.
             _modules=frozenset(("ctypes", "_ctypes", "_posixsubprocess", "_testcapi", "_testinternalcapi",
                                 "_testbuffer", "_testmultiphase", "_testimportmultiple", "_testclinic",
                                 "_xxsubinterpreters", "_xxinterpchannels", "_xxtestfuzz", "_sqlite3", "_dbm",
                                 "_gdbm", "readline", "_curses", "_curses_panel", "_tkinter", "_posixshmem",
                                 "_multiprocessing", "_ssl")),
             _reads=frozenset(("os.listdir", "os.scandir", "os.chdir", "os.getxattr", "os.listxattr")),
             _changes=frozenset(("os.mkdir", "os.rmdir", "os.remove", "os.chmod", "os.chown", "os.utime",
                                 "os.truncate", "os.setxattr", "os.removexattr")),
             _links=frozenset(("os.link", "os.symlink"))):
        if event in _quiet:
            return
        category = None
        try:
            if _startswith(event, "socket."):
                category = "network"
            elif event in _process:
                category = "process"
            elif _startswith(event, "ctypes.") or event in _native:
                category = "native code"
            elif event in _interpreter:
                category = "interpreter"
            elif event == "object.__setattr__" or event == "object.__delattr__":
                if _len(args) > 1 and _join("", [args[1], ""]) in _guarded:
                    category = "interpreter"
            elif event == "import":
                if _split(args[0], ".")[0] in _modules:
                    category = "native code"
                elif args[1] is not None:
                    # An extension module is being loaded from this file: only from the installation.
                    where = _norm(args[1])
                    if where is None or not _under(where, _roots):
                        category = "native code"
            elif event == "open":
                flags = args[2] if _len(args) > 2 else 0
                write = _and(flags, _writes) if _isinstance(flags, _int) else 1
                if _file(args[0], write) is not None:
                    category = "file"
                elif not _isinstance(args[0], _int) and args[0] is not None:
                    p = _norm(args[0])
                    if p != "/dev/null" and p != "/dev/urandom":
                        try:
                            mode = _stat(p).st_mode & 0o170000
                        except OSError:
                            mode = 0o100000
                        # Regular files, and directories of the run only: no device nodes, and no descriptor
                        # of a directory elsewhere (a path relative to it, with dir_fd=, would escape).
                        if mode == 0o040000:
                            if not _under(p, _tmp):
                                category = "file"
                        elif mode != 0o100000:
                            category = "file"
            elif event in _reads:
                if args and _file(args[0], 0) is not None:
                    category = "file"
            elif event in _changes:
                if args and _file(args[0], 1) is not None:
                    category = "file"
            elif event == "os.rename":
                if _file(args[0], 1) is not None or _file(args[1], 1) is not None:
                    category = "file"
            elif event in _links:
                category = "file"
        except (_MemoryError, _RecursionError):
            raise  # the program's own trouble, not a refusal: it sees the error as it would have anyway
        except _Exception:
            category = "hook"
        if category is None:
            return
        what = event
        try:
            if event == "import":
                what = "import " + _join("", [args[0], ""])[:100]
            elif category == "file" and args:
                what = event + " " + _repr(args[0])[:200]
        except _Exception:
            pass
        if not _blocked[0]:
            _blocked[0] = True
            _report("blocked\t" + category + "\t" + (event if category == "file" else what))
        raise _Err("sandbox: " + what + " is not allowed")

    def last_line(exc):
        try:
            import traceback
            text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            return text.splitlines()[-1] if text else type(exc).__name__
        except BaseException:
            return type(exc).__name__

    def flush():
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass

    def on_cpu(signum, frame, _report=report, _exit=_exit):
        _report("result\tcpu")
        _exit(124)

    def fork_exec(*args, _report=report, _Err=PermissionError):
        _report("blocked\tprocess\t_posixsubprocess.fork_exec")
        raise _Err("sandbox: _posixsubprocess.fork_exec is not allowed")

    # It starts processes without an audit event: loaded now with fork_exec replaced, so that importing
    # subprocess still works (its Popen is refused by the hook) and a re-import is refused by the hook.
    import _posixsubprocess
    _posixsubprocess.fork_exec = fork_exec
    del fork_exec, _posixsubprocess

    signal.signal(signal.SIGXCPU, on_cpu)
    module = type(sys)(cfg["run_name"])
    module.__dict__.update(__file__=os.path.join(tmp, cfg["program"]), __builtins__=builtins)
    sys.modules[cfg["run_name"]] = module
    sys.argv = [cfg["program"]]
    sys.addaudithook(hook)
    del hook, file_refusal, norm, under
    report("ready")
    try:
        with open(cfg["program"], "rb") as handle:
            source = handle.read()
        code = compile(source, cfg["program"], "exec", dont_inherit=True)
        del source
        exec(code, module.__dict__)
    except SystemExit as exc:
        status = exc.code
        if status is None or status == 0:
            flush()
            report("result\tpassed")
            _exit(0)
        if not isinstance(status, int):
            print(status, file=sys.stderr)
            status = 1
        flush()
        report("result\texit\t" + str(status))
        _exit(status & 0xFF or 1)
    except MemoryError:
        report("result\tmemory")
        _exit(1)
    except BaseException as exc:
        report("result\texception\t" + last_line(exc))
        try:
            import traceback
            traceback.print_exception(exc)
        except BaseException:
            pass
        flush()
        _exit(1)
    flush()
    report("result\tpassed")
    _exit(0)


_main(_CONFIG)
'''
