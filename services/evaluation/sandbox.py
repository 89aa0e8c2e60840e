"""Run untrusted Python (a model's answer with a benchmark's tests) in an isolated, limited subprocess.

Never call this from a service process: it is for ``orchestratex eval`` and the tests.

**The boundary is bubblewrap** (``bwrap``, Debian package ``bubblewrap``). Each run is started as::

    bwrap --unshare-all --unshare-user --disable-userns --die-with-parent --new-session
          --uid 65534 --gid 65534 --cap-drop ALL
          --ro-bind <each path below> <same path> ...
          --tmpfs <site-packages under them> --remount-ro <same> ...
          --proc /proc --dev /dev --remount-ro /dev --size 16777216 --tmpfs /tmp
          --bind <run directory> <run directory> --chdir <run directory> --remount-ro /
          -- <base interpreter> -I -S -B -c <bootstrap>

so the program has new user, mount, PID, network, IPC, UTS and cgroup namespaces (no network but a
loopback that is down, no process outside its own, no nested user namespace where bwrap and the kernel
support ``--disable-userns``, as bwrap 0.8 on Linux 6 does), runs as uid/gid 65534 with no capability and
``no_new_privs``, dies with its parent, and sees a filesystem that holds only: read-only the base
interpreter (``sys._base_executable``, never a virtual environment's) and its standard library
(``sys.base_prefix``'s ``stdlib``/``platstdlib``, with any ``site-packages`` under them hidden by an empty
read-only tmpfs), the directories of the shared libraries the interpreter loads (found by ``ldd``, e.g.
``/lib/x86_64-linux-gnu`` and ``/lib64``); a fresh ``/proc`` and minimal ``/dev`` (read-only); a small
fresh tmpfs ``/tmp``; and, read-write, the run's own temporary directory as its working directory. No
``/etc``, ``/home``, ``/root`` (beyond the path to the interpreter), ``/work``, no ``site-packages``; the
rest of the root is read-only. The interpreter runs with ``-I -S -B`` (isolated mode, no ``site``, no
bytecode files). :func:`strong_isolation` says whether this works here (probed once by running a trivial
program under it). The user namespace maps 65534 to the parent's user: when the parent is root, what the
program writes in its directory is root's, and ``RLIMIT_NPROC`` does not apply (the audit hook refuses
forks; the PID namespace ends every process with the run).

Inside it, as before and whatever the isolation:

* **an empty environment** except ``PATH``, ``LANG``, and ``HOME``/``TMPDIR`` pointing at the run's
  directory, so the parent's secrets (``OPENROUTER_API_KEY``...) are never visible; stdin is ``/dev/null``;
* **a fresh temporary directory** as its working directory, removed afterwards whatever happened (exit,
  timeout, cancellation of the awaiting task);
* **resource limits** set by a small bootstrap before the program runs: address space (``memory_mb``), CPU
  time (``timeout_s`` + 1 s, then SIGKILL a second later), file size (4 MB), open files (64), processes
  (0: no fork and no thread, except for root's user), no core files; plus a wall-clock timeout after
  which everything the run started is killed (the process group, and with bubblewrap the whole PID
  namespace), before the direct child is reaped (so that its id, also its group's, is not reused).

**Defence in depth, not the boundary**: an audit hook (:func:`sys.addaudithook`, installed by the
bootstrap before the program's code runs) refuses sockets, processes (``os.fork``, ``subprocess``,
``os.system``, ``os.exec*``, ``os.posix_spawn``, signals to other processes; threads too where Python
raises ``_thread.start_new_thread``, from 3.13), native code (``ctypes``, ``mmap``, ``_posixsubprocess``,
extension modules from outside the standard library, building code objects), modules that reach files
without an audit event (``sqlite3``, ``dbm``, ``readline``, ``curses``, POSIX shared memory, ``ssl``),
tracing and sub-interpreters, links, ``..`` in paths, and any file access outside the run's directory
except reads under the standard library of ``sys.base_prefix`` (never ``site-packages``). It guards
itself: setting or deleting ``__code__``, ``__defaults__``, ``__kwdefaults__`` or ``__closure__`` of one
of its functions is refused (its settings are their default arguments, so that is how they would be
widened), it keeps no state a program could reset (the write budget is an ``itertools.count``, every
refusal is reported), and reading ``tb_frame`` from a traceback entry that is one of its own frames (a
refusal's traceback ends in the hook) is refused. Only ``tb_frame``, ``gi_frame``, ``cr_frame``,
``f_code`` and ``__code__``/``__defaults__`` reads raise an audit event (``object.__getattr__``);
``f_locals``, ``f_globals`` and ``f_back`` do not, so code of the program that runs inside the hook (a
``__class__`` or ``__repr__`` it calls) can still reach the hook's frame through ``sys._getframe``: it
finds nothing there that widens what is allowed. A refused action raises :class:`PermissionError` in the
program and the run's outcome is ``blocked``. CPython's audit hooks are not a sandbox (native code ignores
them); that is why bubblewrap is the boundary.

**Without bubblewrap** :func:`run_python` refuses to run (outcome ``error``, saying to install bubblewrap)
unless called with ``allow_weak=True``. Then it uses what the machine offers (probed once): ``unshare``
network, IPC and PID namespaces (in a user namespace unless root), dropping to ``nobody`` when root and
the interpreter is usable by ``nobody``, the limits and the audit hook. That keeps accidents in, not a
program written to escape: one that gets past the hook has the user's files (and the network without
namespaces). What protected each run is in :attr:`SandboxResult.isolation`.

"Passed" means the program ran to its end: the sandbox appends a last line to it that reports a token
generated by the parent for this run on a separate pipe, and the run passes only with that exact token
and exit status 0. So ``sys.exit(0)``, ``raise SystemExit``, ``os._exit(0)`` or a forged status line
before the end is not a pass. The program file is removed before the program runs (tracebacks still show
its lines), so a program can only find its token by inspecting its own code object: this is protection
against programs that stop early, not against one written to forge its result.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "DEFAULT_LIMITS",
    "Outcome",
    "SandboxLimits",
    "SandboxResult",
    "isolation_available",
    "run_python",
    "strong_isolation",
]

logger = logging.getLogger(__name__)

Outcome = Literal["passed", "failed", "timeout", "memory", "blocked", "error"]
"""How a run ended; see :class:`SandboxResult`."""

_NOBODY = 65534
_DETAIL_CHARS = 300
_STATUS_BYTES = 16_000
_FILE_SIZE_BYTES = 4 * 1024 * 1024
_TMPFS_BYTES = 16 * 1024 * 1024
_OPEN_FILES = 64
_WRITE_BUDGET = 64
"""Files opened for writing, directories made and renames allowed per run: bounds the disk a run can fill
(with ``RLIMIT_FSIZE``) and the work of removing its directory."""
_DRAIN_AFTER_EXIT_S = 2.0
_PROGRAM = "program.py"
_COMPLETE = "__sandbox_complete__"
"""The function the bootstrap gives the program; the line the sandbox appends calls it with the token."""
_UNAVAILABLE = (
    "sandbox unavailable: bubblewrap (bwrap) is missing or does not work here; install it "
    "(apt-get install bubblewrap) or allow the weak sandbox (allow_weak=True; orchestratex eval "
    "--allow-weak-sandbox)"
)


@dataclass(frozen=True)
class SandboxLimits:
    """What one run may use."""

    timeout_s: float = 10.0
    """Wall clock; everything the run started is killed after it."""
    memory_mb: int = 512
    """Address space (``RLIMIT_AS``), including the interpreter's own (about 20 MB)."""
    max_output_bytes: int = 64_000
    """stdout and stderr kept (the first and last halves); the rest is read and dropped."""


DEFAULT_LIMITS = SandboxLimits()
"""The limits used when none are given."""


@dataclass(frozen=True)
class SandboxResult:
    """How a run ended.

    ``outcome``: ``passed`` (ran to its end: the completion token was reported and the exit status is 0),
    ``failed`` (an exception, ``SystemExit`` whatever its status, a non-zero exit, a crash, or stopping
    before its end), ``timeout`` (wall clock or CPU time), ``memory`` (``MemoryError`` or killed for
    memory), ``blocked`` (the program attempted something the audit hook refuses; this wins over every
    other outcome), ``error`` (the sandbox itself could not run it, or refused to without bubblewrap).
    """

    outcome: Outcome
    returncode: int | None
    """Of the sandbox's direct child (``bwrap``, which exits 128 + n when the program is killed by signal
    n; or ``unshare``); None if it never started."""
    detail: str
    """Short, for people: ``passed``, the traceback's last line, ``timed out after 10 s``,
    ``blocked: network (socket.__new__)``... at most 300 characters."""
    seconds: float
    isolation: str
    """What protected this run, e.g. ``bwrap+rlimits+audit`` (see :func:`isolation_available`)."""
    output: str = ""
    """stdout and stderr, interleaved, bounded by ``max_output_bytes`` (a marker says how much was dropped)."""


@dataclass(frozen=True)
class _Installation:
    """The base Python installation the programs run on."""

    executable: str
    """The base interpreter (never a virtual environment's), symbolic links resolved."""
    roots: tuple[str, ...]
    """What the program may read (the audit hook's allowance): the standard library of ``sys.base_prefix``
    (source, bytecode, extension modules), as written and with links resolved."""
    hidden: tuple[str, ...]
    """``site-packages`` directories (of the base installation and of the running environment): never
    readable, even under a root."""
    binds: tuple[str, ...]
    """What bubblewrap binds read-only, parents first: the interpreter, the standard library, and the
    shared libraries the interpreter loads (their directories, or the file for one in the installation)."""
    masks: tuple[str, ...]
    """``site-packages`` directories inside a bind, hidden by an empty read-only tmpfs."""


@dataclass(frozen=True)
class _Plan:
    """How runs are started on this machine (the probe's answer)."""

    prefix: tuple[str, ...]
    """Command that wraps the interpreter (``bwrap ...`` up to the run's own arguments, ``unshare ...
    --``, ``setpriv ... --``), or empty."""
    uid: int | None
    """The user the directory is handed to when it is not the parent's (root dropping to ``nobody``)."""
    label: str
    installation: _Installation
    bwrap: bool = False

    def command(self, directory: str) -> list[str]:
        """The command up to the interpreter's own arguments, for a run in ``directory``."""
        if self.bwrap:
            run = ["--bind", directory, directory, "--chdir", directory, "--remount-ro", "/", "--"]
            return [*self.prefix, *run, self.installation.executable]
        return [*self.prefix, self.installation.executable]


def isolation_available() -> str:
    """The isolation layers runs get on this machine, joined by ``+``.

    ``bwrap+rlimits+audit`` when bubblewrap works (:func:`strong_isolation`). Otherwise what a run with
    ``allow_weak=True`` gets: ``namespace`` (network, IPC and, where possible, PID namespaces, in a user
    namespace unless root), ``nobody`` (runs as an unprivileged user although the parent is root),
    ``rlimits`` and ``audit`` (always); ``rlimits+audit`` when nothing else works. Probed once per process.
    """
    if strong_isolation():
        plan = _strong_plan()
        if plan is not None:
            return plan.label
    return _weak_plan().label


@functools.cache
def strong_isolation() -> bool:
    """Whether runs are isolated by bubblewrap here: ``bwrap`` is on ``PATH`` and a trivial program runs
    under it as uid 65534 on the base interpreter. Probed once per process."""
    return _strong_plan() is not None


@functools.cache
def _installation() -> _Installation:
    base = sys.base_prefix
    scheme = "posix_prefix" if os.name == "posix" else "nt"
    names = {"base": base, "platbase": base, "installed_base": base, "installed_platbase": base}
    paths = sysconfig.get_paths(scheme, vars=names)

    def both(path: str) -> set[str]:
        return {os.path.normpath(path), os.path.realpath(path)}

    roots: set[str] = set()
    for key in ("stdlib", "platstdlib"):
        roots |= both(paths[key])
    for entry in sys.path:
        if entry.endswith(".zip") and _within(os.path.normpath(entry), (os.path.normpath(base),)):
            roots |= both(entry)
    hidden: set[str] = set()
    for where in (paths, sysconfig.get_paths()):
        for key in ("purelib", "platlib"):
            hidden |= both(where[key])
    executable = _base_executable()
    binds = {executable, *(os.path.realpath(paths[key]) for key in ("stdlib", "platstdlib"))}
    binds |= {os.path.realpath(p) for p in roots if p.endswith(".zip") and os.path.isfile(p)}
    binds |= _library_paths(executable, base)
    binds = {p for p in binds if os.path.exists(p)}
    ordered = sorted(binds)
    # A path inside another bound path is already there (every bind shows a host path at the same path).
    kept = tuple(p for p in ordered if not _within(p, tuple(q for q in ordered if q != p)))
    masks = tuple(sorted(p for p in hidden if os.path.isdir(p) and _within(p, kept)))
    return _Installation(executable, tuple(sorted(roots)), tuple(sorted(hidden)), kept, masks)


def _within(path: str, roots: Sequence[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


def _base_executable() -> str:
    """The interpreter of ``sys.base_prefix`` (under a virtual environment, not the environment's)."""
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    candidates = [
        getattr(sys, "_base_executable", "") or "",
        os.path.join(sys.base_prefix, "bin", f"python{version}"),
        os.path.join(sys.base_prefix, "bin", "python3"),
    ]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return os.path.realpath(candidate)
    return os.path.realpath(sys.executable)


def _library_paths(executable: str, base: str) -> set[str]:
    """What to bind so that ``executable`` and the extension modules find their shared libraries.

    From ``ldd``: a library inside the installation is bound alone (its directory also holds
    ``site-packages``); elsewhere its directory, as named and with links resolved, so that the libraries the
    extension modules load from the same system directories are there too. Without ``ldd``, the usual
    system library directories.
    """
    fallback = {p for p in ("/lib", "/lib64", "/usr/lib", "/usr/lib64") if os.path.exists(p)}
    ldd = shutil.which("ldd")
    if ldd is None:
        return fallback
    try:
        done = subprocess.run(
            [ldd, executable],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=_base_env("/"),
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return fallback
    if done.returncode != 0:
        return fallback
    found: set[str] = set()
    installation = (os.path.normpath(base), os.path.realpath(base))
    for line in done.stdout.decode(errors="replace").splitlines():
        words = line.split()
        path = words[2] if len(words) > 2 and words[1] == "=>" else words[0] if words else ""
        if not path.startswith("/"):
            continue
        real = os.path.realpath(path)
        if _within(os.path.normpath(path), installation) or _within(real, installation):
            found |= {os.path.normpath(path), real}
        else:
            found |= {os.path.dirname(os.path.normpath(path)), os.path.dirname(real)}
    return found or fallback


@functools.cache
def _strong_plan() -> _Plan | None:
    bwrap = shutil.which("bwrap") if sys.platform.startswith("linux") else None
    if bwrap is None:
        logger.warning("sandbox: bubblewrap (bwrap) is not installed: runs need allow_weak=True")
        return None
    installation = _installation()
    for disable_userns in (True, False):
        plan = _Plan(
            _bwrap_prefix(bwrap, installation, disable_userns), None, "bwrap+rlimits+audit", installation, True
        )
        if _bwrap_works(plan):
            logger.info("sandbox isolation: %s", plan.label)
            return plan
    logger.warning("sandbox: bubblewrap does not work here: runs need allow_weak=True")
    return None


def _bwrap_prefix(bwrap: str, installation: _Installation, disable_userns: bool) -> tuple[str, ...]:
    args = [bwrap, "--unshare-all", "--unshare-user"]
    if disable_userns:
        args.append("--disable-userns")
    args += ["--die-with-parent", "--new-session", "--uid", str(_NOBODY), "--gid", str(_NOBODY), "--cap-drop", "ALL"]
    for path in installation.binds:
        args += ["--ro-bind", path, path]
    for path in installation.masks:
        args += ["--tmpfs", path, "--remount-ro", path]
    args += ["--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev", "--size", str(_TMPFS_BYTES)]
    args += ["--tmpfs", "/tmp"]
    return tuple(args)


def _bwrap_works(plan: _Plan) -> bool:
    """Whether a trivial program runs under ``plan``, as ``nobody``, on the base installation."""
    directory = tempfile.mkdtemp(prefix="orx-sandbox-probe-")
    try:
        probe = "import math, os, sys; print(os.getuid(), os.getgid(), sys.prefix == sys.base_prefix, math.sqrt(4))"
        command = [*plan.command(directory), "-I", "-S", "-B", "-c", probe]
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=_base_env(directory),
            cwd=directory,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        _remove_tree(directory)
    out = done.stdout.decode(errors="replace").strip()
    if done.returncode != 0 or out != f"{_NOBODY} {_NOBODY} True 2.0":
        logger.info(
            "sandbox: bwrap probe failed (%s): %s", done.returncode, done.stderr.decode(errors="replace")[-300:]
        )
        return False
    return True


@functools.cache
def _weak_plan() -> _Plan:
    unshare = shutil.which("unshare") if sys.platform.startswith("linux") else None
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    installation = _installation()
    candidates: list[_Plan] = []
    if os.geteuid() == 0 and setpriv:
        drop = (setpriv, f"--reuid={_NOBODY}", f"--regid={_NOBODY}", "--clear-groups", "--no-new-privs", "--")
        if unshare:
            # Root creates the namespaces itself, then drops to nobody inside them.
            ns = (unshare, "--net", "--ipc", "--pid", "--fork", "--kill-child", "--")
            candidates.append(_Plan((*ns, *drop), _NOBODY, "namespace+nobody+rlimits+audit", installation))
        candidates.append(_Plan(drop, _NOBODY, "nobody+rlimits+audit", installation))
    if unshare:
        user_ns = (unshare, "--user", "--map-root-user", "--net", "--ipc")
        candidates.append(
            _Plan((*user_ns, "--pid", "--fork", "--kill-child", "--"), None, "namespace+rlimits+audit", installation)
        )
        candidates.append(_Plan((*user_ns, "--"), None, "namespace+rlimits+audit", installation))
    for plan in candidates:
        if _works(plan):
            break
    else:
        plan = _Plan((), None, "rlimits+audit", installation)
    if os.geteuid() == 0 and plan.uid is None:
        logger.warning(
            "sandbox (weak, without bubblewrap): running as root and Python is not usable by nobody (%s): "
            "programs run as root (in a user namespace when available); only the audit hook guards files",
            installation.executable,
        )
    logger.info("sandbox isolation (weak): %s", plan.label)
    return plan


def _works(plan: _Plan) -> bool:
    """Whether the interpreter starts under ``plan`` and finds the same installation."""
    command = [*plan.command("/"), "-I", "-S", "-c", "import sys; print(sys.base_prefix)"]
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
    found = done.stdout.decode(errors="replace").strip()
    return done.returncode == 0 and found in (os.path.normpath(sys.base_prefix), os.path.realpath(sys.base_prefix))


def _base_env(home: str) -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": home, "TMPDIR": home}


async def run_python(
    source: str,
    limits: SandboxLimits = DEFAULT_LIMITS,
    *,
    run_name: str = "__main__",
    allow_weak: bool = False,
) -> SandboxResult:
    """Run ``source`` as a program in the sandbox and say how it ended (see the module docstring).

    ``run_name`` is the program's ``__name__``: another name keeps its ``if __name__ == "__main__":`` block
    from running (HumanEval's harness runs answers that way). Without bubblewrap the outcome is ``error``
    unless ``allow_weak`` (then the weaker layers of :func:`isolation_available` are all there is). Never
    raises for anything the program does; a failure of the sandbox itself is the outcome ``error``.
    Cancelling the awaiting task kills everything the run started, reaps it and removes the directory
    before the cancellation propagates.
    """
    return await _run(source, limits, run_name=run_name, allow_weak=allow_weak, audit=True)


async def _run(source: str, limits: SandboxLimits, *, run_name: str, allow_weak: bool, audit: bool) -> SandboxResult:
    """:func:`run_python`; ``audit=False`` (for tests of the boundary itself) installs no audit hook."""
    started = time.monotonic()
    try:
        plan = await asyncio.to_thread(_choose_plan, allow_weak)
    except Exception as exc:  # the probe itself failed: nothing can be run safely
        return SandboxResult("error", None, _clip(f"sandbox error: {exc!r}"), 0.0, "none")
    if plan is None:
        return SandboxResult("error", None, _UNAVAILABLE, 0.0, "none")
    label = plan.label if audit else plan.label.removesuffix("+audit")
    loop = asyncio.get_running_loop()
    token = secrets.token_hex(16)
    directory: str | None = None
    child: _Child | None = None
    fds: list[int] = []
    transports: list[asyncio.BaseTransport] = []
    try:
        directory = _make_directory(plan)
        _write_program(directory, source, token, plan)
        out_read, out_write = os.pipe()
        fds += [out_read, out_write]
        status_read, status_write = os.pipe()
        fds += [status_read, status_write]
        installation = plan.installation
        config = {
            "program": _PROGRAM,
            "run_name": run_name,
            "status_fd": status_write,
            "tmp": directory,
            "roots": installation.roots,
            "hidden": installation.hidden,
            "rlimits": _rlimits(limits),
            "write_budget": _WRITE_BUDGET,
            "complete": _COMPLETE,
            "audit": audit,
        }
        command = [*plan.command(directory), "-I", "-S", "-B", "-c", f"_CONFIG = {config!r}\n{_BOOTSTRAP}"]
        child = _Child(
            loop,
            directory,
            _spawn(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out_write,
                stderr=subprocess.STDOUT,
                cwd=directory,
                env=_base_env(directory),
                start_new_session=True,
                pass_fds=(status_write,),
            ),
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
            await asyncio.wait_for(asyncio.shield(child.exited), timeout=limits.timeout_s)
        except TimeoutError:
            timed_out = True
            await child.stop()
        seconds = time.monotonic() - spawned
        # The direct child has exited but is not reaped yet, so its id (the group's) is not reused: anything
        # left in the group (there should be nothing: forks are refused) dies with it. Then reap.
        child.kill_group()
        returncode = child.reap()
        if not plan.bwrap:
            # Without a PID namespace a forked process could have left the group (setsid): its command line
            # is the bootstrap's still. (With bubblewrap, the namespace is empty once bwrap has exited.)
            _kill_stragglers(directory)
        await asyncio.wait({output.closed, status.closed}, timeout=_DRAIN_AFTER_EXIT_S)
        return _classify(
            timed_out=timed_out,
            returncode=returncode,
            status=status.text(),
            token=token,
            output=output.text(),
            limits=limits,
            seconds=seconds,
            isolation=label,
            bwrap=plan.bwrap,
        )
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        logger.warning("sandbox: could not run a program: %r", exc)
        return SandboxResult(
            "error",
            child.returncode if child is not None else None,
            _clip(f"sandbox error: {exc!r}"),
            time.monotonic() - started,
            label,
        )
    finally:
        try:
            if child is not None and not child.reaped:
                await child.stop()
                child.kill_group()
                child.reap()
        finally:
            if child is not None:
                child.abandon()  # cancelled again while stopping: a thread reaps it
            for transport in transports:
                transport.close()
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            if directory is not None:
                _remove_tree(directory)


def _choose_plan(allow_weak: bool) -> _Plan | None:
    if strong_isolation():
        plan = _strong_plan()
        if plan is not None:
            return plan
    return _weak_plan() if allow_weak else None


def _spawn(command: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start the run's direct child (a seam for the tests, which record what was started)."""
    return subprocess.Popen(command, **kwargs)


class _Child:
    """The run's direct child, reaped only by :meth:`reap`, so that its id (also its process group's) is
    never reused while it may still be signalled.

    Its exit is watched through a pidfd (readable when the process has exited, before it is reaped), or where
    there is none by a thread waiting with ``WNOWAIT``. Nothing else reaps it: it is a plain
    :class:`subprocess.Popen`, not an asyncio child (whose watcher reaps as soon as it exits).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, directory: str, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.directory = directory
        self.exited: asyncio.Future[None] = loop.create_future()
        self._loop = loop
        self._pidfd: int | None = None
        try:
            self._pidfd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            threading.Thread(target=self._wait_in_thread, name="sandbox-wait", daemon=True).start()
        else:
            loop.add_reader(self._pidfd, self._on_exit)

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    @property
    def reaped(self) -> bool:
        return self.proc.returncode is not None

    def _on_exit(self) -> None:
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
        if not self.exited.done():
            self.exited.set_result(None)

    def _wait_in_thread(self) -> None:
        with contextlib.suppress(OSError):
            os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOWAIT)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            self._loop.call_soon_threadsafe(self._on_exit)

    def kill_group(self) -> None:
        if not self.reaped:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    async def stop(self) -> None:
        """Kill everything the run started and wait until the direct child has exited (not reaped).

        Its children first: bubblewrap's (the PID namespace's init, whose death kills every process in the
        namespace) or ``unshare --fork``'s, so that the direct child sees them die and exits; then the group;
        then any process that still names the run's directory (see :func:`_kill_stragglers`).
        """
        if self.reaped:
            return
        children = _children(self.proc.pid)
        for pid in children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if children:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.exited), _DRAIN_AFTER_EXIT_S)
        self.kill_group()
        await asyncio.shield(self.exited)
        _kill_stragglers(self.directory)

    def reap(self) -> int:
        """Collect the exit status (the child has exited, or this waits until it has)."""
        returncode = self.proc.wait()
        self._close()
        return returncode

    def abandon(self) -> None:
        """If still unreaped (cancelled while stopping), kill it and let a thread reap it."""
        if not self.reaped:
            self.kill_group()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.proc.pid, signal.SIGKILL)
            threading.Thread(target=self.proc.wait, name="sandbox-reap", daemon=True).start()
            _kill_stragglers(self.directory)
        self._close()

    def _close(self) -> None:
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None


def _kill_stragglers(directory: str) -> None:
    """Kill the processes whose command line names the run's directory (bubblewrap's and the bootstrap's do).

    When a run is stopped early: bubblewrap's PID namespace init dies with bubblewrap, but if bubblewrap was
    killed right after starting it, before it asked for that, it would be left behind (outside our process
    group: it starts a new session). After every run without bubblewrap: a forked process that left the
    group. Signalled through a pidfd opened before the command line is read, so a reused process id is
    never signalled.
    """
    if not hasattr(os, "pidfd_open") or not os.path.isdir("/proc"):
        return
    needle = directory.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            pidfd = os.pidfd_open(int(entry))
        except OSError:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                if needle in handle.read():
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except OSError:
            pass
        finally:
            os.close(pidfd)


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


def _write_program(directory: str, source: str, token: str, plan: _Plan) -> None:
    """The program, then the line that reports ``token`` (the bootstrap removes the file before it runs)."""
    program = os.path.join(directory, _PROGRAM)
    with open(program, "w", encoding="utf-8") as handle:
        handle.write(source if source.endswith("\n") else source + "\n")
        handle.write(f"{_COMPLETE}({token!r})\n")
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


def _children(pid: int) -> list[int]:
    """The children of our (unreaped, so not reused) child ``pid``; empty where /proc does not say."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as handle:
            return [int(word) for word in handle.read().split()]
    except (OSError, ValueError):
        return []


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
    token: str,
    output: str,
    limits: SandboxLimits,
    seconds: float,
    isolation: str,
    bwrap: bool,
) -> SandboxResult:
    """The outcome from what the bootstrap reported on its pipe, the exit status and the clock."""
    ready = False
    completed = False
    blocked: tuple[str, str] | None = None
    result: list[str] | None = None
    for line in status.splitlines():
        fields = line.split("\t")
        if fields[0] == "ready":
            ready = True
        elif fields[0] == "complete" and len(fields) == 2 and fields[1] == token:
            completed = True
        elif fields[0] == "blocked" and len(fields) >= 3 and blocked is None:
            blocked = (fields[1], fields[2])
        elif fields[0] == "result" and len(fields) >= 2:
            result = fields[1:]

    signalled = returncode
    if bwrap and returncode is not None and returncode > 128:
        signalled = 128 - returncode  # bwrap exits 128 + n when the program was killed by signal n
    lines = output.rstrip("\n").split("\n")
    # With a PID namespace, unshare cannot re-raise a SIGKILL of its child on itself; it says so and exits 1.
    unshare_killed = not bwrap and returncode == 1 and lines[-1].startswith("unshare: sigprocmask")
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
        if kind == "end" and returncode == 0:
            if completed:
                return done("passed", "passed")
            return done("failed", "stopped before its end (its last line did not report the run's token)")
        if kind == "exception":
            return done("failed", rest or "exception")
        if kind == "memory":
            return done("memory", f"memory limit ({limits.memory_mb} MB) exceeded")
        if kind == "exit":
            return done("failed", f"exited with status {rest} before its end")
        if kind == "cpu":
            return done("timeout", "CPU time limit exceeded")
        if kind == "error":
            return done("error", f"sandbox error: {rest}")
    if not ready:
        last = output.strip().splitlines()[-1:] or [f"exit status {returncode}"]
        return done("error", f"sandbox did not start: {last[0]}")
    memory_words = ("MemoryError", "Cannot allocate memory", "out of memory")
    if unshare_killed or signalled in (-signal.SIGKILL, -signal.SIGXCPU):
        if signalled != -signal.SIGXCPU and seconds < math.ceil(limits.timeout_s) + 0.5:
            return done("memory", "killed (out of memory)")
        return done("timeout", "CPU time limit exceeded")
    if signalled is not None and signalled < 0:
        if any(word in output for word in memory_words):
            return done("memory", f"memory limit ({limits.memory_mb} MB) exceeded")
        try:
            name = signal.Signals(-signalled).name
        except ValueError:
            name = f"signal {-signalled}"
        return done("failed", f"killed by {name}")
    if returncode == 0:
        return done("failed", "stopped before its end (exit status 0)")
    return done("failed", f"exited with status {returncode}")


# The bootstrap: run by the child interpreter with ``-c``, after a line ``_CONFIG = {...}``. It sets the
# limits, installs the audit hook, then executes the program in a fresh module and reports on the status
# pipe. The hook reads nothing global at run time (everything it uses is bound as a default argument, and
# methods are called unbound so that str/bytes subclasses cannot lie about a path), has no closure cells,
# keeps no state that can be reset, and nothing refers to it once installed.
_BOOTSTRAP = r'''
import builtins, itertools, linecache, os, resource, signal, sys, traceback


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
                     _hidden=tuple(cfg["hidden"]), _isinstance=isinstance, _int=int, _next=next,
                     _used=itertools.count(), _budget=cfg["write_budget"]):
        """None when allowed, else the reason (a file descriptor is allowed: it was opened through here)."""
        if path is None or _isinstance(path, _int):
            return None
        p = _norm(path)
        if p is None:
            return "path"
        if p == "/dev/null" or (p == "/dev/urandom" and write == 0):
            return None
        if _under(p, _tmp):
            # A counter, not a number: the program can only use the budget up, never give it back.
            if write and _next(_used) >= _budget:
                return "too many writes"
            return None
        if write == 0 and _under(p, _roots) and not _under(p, _hidden):
            return None
        return "outside"

    def hook(event, args, _report=report, _norm=norm, _under=under, _file=file_refusal, _writes=writes,
             _roots=tuple(cfg["roots"]), _hidden=tuple(cfg["hidden"]), _Err=PermissionError,
             _isinstance=isinstance, _int=int, _and=int.__and__, _startswith=str.startswith, _split=str.split,
             _join=str.join, _len=len, _repr=repr, _stat=os.stat, _getframe=sys._getframe,
             _get=object.__getattribute__, _Exception=Exception, _MemoryError=MemoryError,
             _RecursionError=RecursionError, _tmp=(tmp,),
             _quiet=frozenset(("exec", "compile", "builtins.id", "marshal.loads", "sys._getframe",
                               "time.sleep", "function.__new__", "os.putenv", "os.unsetenv",
                               "sys.addaudithook", "builtins.input", "resource.setrlimit")),
             _process=frozenset(("os.system", "os.exec", "os.posix_spawn", "os.fork", "os.forkpty",
                                 "subprocess.Popen", "os.kill", "os.killpg", "signal.pthread_kill",
                                 "resource.prlimit", "pty.spawn", "_thread.start_new_thread")),
             _native=frozenset(("mmap.__new__", "code.__new__")),
             _interpreter=frozenset(("sys.settrace", "sys.setprofile", "gc.get_objects", "gc.get_referrers",
                                     "cpython.PyInterpreterState_New", "sys._current_frames")),
             # The hook's settings are default arguments of its functions: replacing their defaults or code is
             # how they would be widened (``__closure__`` is read-only; listed in case that changes). Other
             # functions are the program's own (``namedtuple`` sets ``__defaults__``, ``types.coroutine``
             # ``__code__``).
             _guarded=frozenset(("__code__", "__defaults__", "__kwdefaults__", "__closure__")),
             _type=type, _function=type(lambda: None),
             # Native code, and modules that reach files or processes without an audit event.
             _modules=frozenset(("ctypes", "_ctypes", "_posixsubprocess", "_testcapi", "_testinternalcapi",
                                 "_testbuffer", "_testmultiphase", "_testimportmultiple", "_testclinic",
                                 "_xxsubinterpreters", "_xxinterpchannels", "_xxtestfuzz", "_sqlite3", "_dbm",
                                 "_gdbm", "readline", "_curses", "_curses_panel", "_tkinter", "_posixshmem",
                                 "_multiprocessing", "_ssl")),
             _reads=frozenset(("os.listdir", "os.scandir", "os.chdir", "os.getxattr", "os.listxattr")),
             _changes=frozenset(("os.mkdir", "os.rmdir", "os.remove", "os.chmod", "os.chown", "os.utime",
                                 "os.truncate", "os.setxattr", "os.removexattr")),
             _links=frozenset(("os.link", "os.symlink")),
             _own=frozenset()):
        if event in _quiet:
            return
        category = None
        try:
            if event == "object.__getattr__":
                # A refusal's traceback ends in this hook's frame (a MemoryError's may pass through its
                # helpers): its ``tb_frame`` would reach their arguments. Other frames are the program's own.
                # The hook's own reads below raise this event again: let through (their caller is the hook).
                if _len(args) > 1 and _join("", [args[1], ""]) == "tb_frame":
                    if _get(_getframe(1), "f_code") not in _own:
                        if _get(_get(args[0], "tb_frame"), "f_code") in _own:
                            category = "interpreter"
            elif _startswith(event, "socket."):
                category = "network"
            elif event in _process:
                category = "process"
            elif _startswith(event, "ctypes.") or event in _native:
                category = "native code"
            elif event in _interpreter:
                category = "interpreter"
            elif event == "object.__setattr__" or event == "object.__delattr__":
                if _len(args) > 1 and _join("", [args[1], ""]) in _guarded and _type(args[0]) is _function:
                    if _get(args[0], "__code__") in _own:
                        category = "interpreter"
            elif event == "import":
                if _split(args[0], ".")[0] in _modules:
                    category = "native code"
                elif args[1] is not None:
                    # An extension module is being loaded from this file: only from the standard library.
                    where = _norm(args[1])
                    if where is None or not _under(where, _roots) or _under(where, _hidden):
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
            elif event == "object.__getattr__" or event == "object.__setattr__":
                what = event + " " + _join("", [args[1], ""])[:100]
            elif category == "file" and args:
                what = event + " " + _repr(args[0])[:200]
        except _Exception:
            pass
        # Every refusal is reported (no "already reported" flag for a program to set); the parent keeps the
        # first.
        _report("blocked\t" + category + "\t" + (event if category == "file" else what))
        raise _Err("sandbox: " + what + " is not allowed")

    # The hook recognises its own frames by their code objects, known only once it is defined.
    own = frozenset((hook.__code__, file_refusal.__code__, norm.__code__, under.__code__, report.__code__))
    hook.__defaults__ = hook.__defaults__[:-1] + (own,)

    def complete(token, _report=report, _str=str):
        _report("complete\t" + _str(token)[:100])

    def last_line(exc):
        try:
            text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            return text.splitlines()[-1] if text else type(exc).__name__
        except BaseException:
            return type(exc).__name__

    def without_hook(exc):
        """Drop the hook's frame (the innermost) from a refusal's traceback, so that it can be printed."""
        seen = set()
        while exc is not None and id(exc) not in seen:
            seen.add(id(exc))
            tb = exc.__traceback__
            if type(exc) is PermissionError and str(exc).startswith("sandbox: ") and tb is not None:
                if tb.tb_next is None:
                    exc.__traceback__ = None
                else:
                    while tb.tb_next.tb_next is not None:
                        tb = tb.tb_next
                    tb.tb_next = None
            exc = exc.__cause__ or exc.__context__

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

    # The program file holds the run's token (its last line): read, then removed; tracebacks still show its
    # lines from linecache, with that one replaced.
    program = cfg["program"]
    try:
        with open(program, "rb") as handle:
            source = handle.read()
        os.remove(program)
    except OSError as exc:
        report("result\terror\tcannot read the program: " + str(exc))
        _exit(70)
    lines = source.decode("utf-8", "replace").splitlines(True)
    if lines:
        lines[-1] = cfg["complete"] + "(...)\n"
    linecache.cache[program] = (len(source), None, lines, program)
    del lines

    signal.signal(signal.SIGXCPU, on_cpu)
    module = type(sys)(cfg["run_name"])
    module.__dict__.update(__file__=os.path.join(tmp, program), __builtins__=builtins)
    module.__dict__[cfg["complete"]] = complete
    sys.modules[cfg["run_name"]] = module
    sys.argv = [program]
    if cfg["audit"]:
        sys.addaudithook(hook)
    del hook, file_refusal, norm, under, complete, own
    report("ready")
    try:
        code = compile(source, program, "exec", dont_inherit=True)
        del source
        exec(code, module.__dict__)
    except SystemExit as exc:
        # Not a pass whatever the status: the program stopped before its end (its last line reports it).
        status = exc.code
        if status is None:
            status = 0
        elif not isinstance(status, int):
            print(status, file=sys.stderr)
            status = 1
        flush()
        report("result\texit\t" + str(status))
        _exit(status & 0xFF)
    except MemoryError:
        report("result\tmemory")
        _exit(1)
    except BaseException as exc:
        report("result\texception\t" + last_line(exc))
        try:
            if exc.__traceback__ is not None:  # its first entry is this bootstrap's frame
                exc.__traceback__ = exc.__traceback__.tb_next
            without_hook(exc)
            traceback.print_exception(exc)
        except BaseException:
            pass
        flush()
        _exit(1)
    flush()
    report("result\tend")
    _exit(0)


_main(_CONFIG)
'''
