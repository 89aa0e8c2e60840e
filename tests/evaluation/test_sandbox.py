"""The code-execution sandbox (services/evaluation/sandbox.py) and the HumanEval checker built on it.

Every test runs real child interpreters: what is checked is what the child could do, seen from outside
(the listener that got no connection, the file that was not written, the process group that is empty,
the directory that is gone). Tests of the boundary itself run programs without the audit hook
(``sandbox._run(..., audit=False)``): what stops them there is bubblewrap alone.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from services.evaluation import humaneval, sandbox
from services.evaluation.humaneval import check_humaneval, extract_program
from services.evaluation.sandbox import (
    SandboxLimits,
    SandboxResult,
    isolation_available,
    run_python,
    strong_isolation,
)

EVAL_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "eval"
HUMANEVAL = EVAL_DIR / "humaneval.jsonl"
QUICK = SandboxLimits(timeout_s=5.0, memory_mb=256)
LABEL = "_(simulated answer · draft 0a1b2c3d)_"
SITE_PACKAGES = sysconfig.get_paths()["purelib"]
"""The running environment's (the virtual environment's when there is one)."""
HAS_TOKENIZERS = Path(SITE_PACKAGES, "tokenizers").is_dir()


@pytest.fixture
def bwrap() -> None:
    if not strong_isolation():
        pytest.skip("bubblewrap does not work here (make .stamps/bubblewrap installs it)")


@pytest.fixture
def no_bwrap(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a machine without bubblewrap."""
    monkeypatch.setattr(sandbox, "strong_isolation", lambda: False)


async def run_bare(source: str, limits: SandboxLimits = QUICK) -> SandboxResult:
    """Run without the audit hook: only the boundary holds the program."""
    return await sandbox._run(source, limits, run_name="__main__", allow_weak=False, audit=False)


@dataclass
class Spawns:
    """The sandbox children started during a test: (process group id, working directory)."""

    started: list[tuple[int, str]] = field(default_factory=list)
    event: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
def spawns(monkeypatch: pytest.MonkeyPatch) -> Spawns:
    record = Spawns()
    real = sandbox._spawn

    def spy(command: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        proc = real(command, **kwargs)
        record.started.append((proc.pid, kwargs["cwd"]))
        record.event.set()
        return proc

    monkeypatch.setattr(sandbox, "_spawn", spy)
    return record


def group_members(pgid: int) -> list[tuple[int, str]]:
    """Processes (pid, state) whose process group is ``pgid``, zombies included."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = text.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid:
            members.append((int(entry), fields[0]))
    return members


def survivors(directory: str) -> list[int]:
    """Processes whose command line names the run's directory (bwrap's and the bootstrap's do), in any
    process group, session or PID namespace."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if directory.encode() in cmdline:
            found.append(int(entry))
    return found


def _exists(path: str | Path) -> bool:
    return Path(path).exists()


def _realpath(path: str) -> str:
    return os.path.realpath(path)


def assert_gone(spawns: Spawns) -> None:
    assert spawns.started, "the sandbox started no process"
    for pgid, directory in spawns.started:
        # Our child is reaped; anything else left in its group is dead (a zombie until init reaps it).
        assert [(pid, state) for pid, state in group_members(pgid) if pid == pgid or state != "Z"] == []
        assert survivors(directory) == []
        assert not Path(directory).exists()


# -- outcomes ---------------------------------------------------------------------------------------


async def test_a_passing_program_passes() -> None:
    result = await run_python("print('hello from the sandbox')", QUICK)
    assert result.outcome == "passed"
    assert result.returncode == 0
    assert result.detail == "passed"
    assert result.output == "hello from the sandbox\n"
    assert result.isolation == isolation_available()
    assert 0 < result.seconds < QUICK.timeout_s


async def test_an_assertion_failure_fails_with_its_name_and_its_source_line() -> None:
    result = await run_python("x = 1 + 1\nassert x == 3, 'arithmetic'\n", QUICK)
    assert result.outcome == "failed"
    assert result.detail == "AssertionError: arithmetic"
    assert "Traceback" in result.output
    assert "assert x == 3, 'arithmetic'" in result.output  # from linecache: the file itself is gone
    assert "_main" not in result.output  # the bootstrap's frame is left out


async def test_a_syntax_error_fails() -> None:
    result = await run_python("def f(:\n    pass\n", QUICK)
    assert result.outcome == "failed"
    assert result.detail.startswith("SyntaxError")


@pytest.mark.parametrize(
    ("source", "detail"),
    [
        ("import os\nos._exit(0)\nassert False\n", "stopped before its end (exit status 0)"),
        ("import sys\nsys.exit(0)\nassert False\n", "exited with status 0 before its end"),
        ("raise SystemExit\n", "exited with status 0 before its end"),
        ("raise SystemExit(3)\n", "exited with status 3 before its end"),
    ],
    ids=["os._exit", "sys.exit", "SystemExit", "SystemExit(3)"],
)
async def test_exiting_before_the_end_is_not_a_pass(source: str, detail: str) -> None:
    result = await run_python(source, QUICK)
    assert result.outcome == "failed"
    assert result.detail == detail


async def test_a_forged_status_line_is_not_a_pass() -> None:
    # Writes what a finished run reports, with a made-up token, to every descriptor, then exits 0.
    source = (
        "import os\nfor fd in range(3, 64):\n    try:\n"
        "        os.write(fd, b'ready\\ncomplete\\t' + b'0' * 32 + b'\\nresult\\tend\\n')\n"
        "    except OSError:\n        pass\nos._exit(0)\n"
    )
    result = await run_python(source, QUICK)
    assert result.returncode == 0
    assert result.outcome == "failed"
    assert result.detail.startswith("stopped before its end")


async def test_the_program_file_with_its_token_is_gone_when_it_runs() -> None:
    result = await run_python("import os\nprint(os.listdir('.'), os.path.exists(__file__))\n", QUICK)
    assert result.outcome == "passed"
    assert result.output == "[] False\n"


async def test_an_endless_loop_times_out_and_leaves_nothing(spawns: Spawns) -> None:
    limits = SandboxLimits(timeout_s=1.5, memory_mb=256)
    result = await run_python("while True:\n    pass\n", limits)
    assert result.outcome == "timeout"
    assert result.detail == "timed out after 1.5 s"
    assert 1.5 <= result.seconds < 5
    assert_gone(spawns)


async def test_allocating_past_the_limit_is_memory() -> None:
    limits = SandboxLimits(timeout_s=5.0, memory_mb=128)
    result = await run_python("block = bytearray(1024 * 1024 * 1024)\nprint(len(block))\n", limits)
    assert result.outcome == "memory"
    assert "128 MB" in result.detail


async def test_ten_megabytes_of_output_complete_and_are_bounded() -> None:
    limits = SandboxLimits(timeout_s=10.0, memory_mb=256, max_output_bytes=10_000)
    result = await run_python("import sys\nsys.stdout.write('x' * 10_000_000)\nprint('end')\n", limits)
    assert result.outcome == "passed"
    assert len(result.output) < 10_100
    assert "bytes dropped" in result.output
    assert result.output.endswith("end\n")
    assert len(result.detail) <= 300


async def test_the_directory_is_the_cwd_and_is_removed_afterwards() -> None:
    result = await run_python("import os\nprint(os.getcwd())\nopen('scratch.txt', 'w').write('kept?')\n", QUICK)
    assert result.outcome == "passed"
    cwd = Path(result.output.strip())
    assert cwd.name.startswith("orx-sandbox-")
    assert cwd != Path.cwd()
    assert not _exists(cwd)


async def test_cancelling_kills_and_reaps_the_child(spawns: Spawns) -> None:
    task = asyncio.create_task(run_python("while True:\n    pass\n", SandboxLimits(timeout_s=60.0)))
    await spawns.event.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_gone(spawns)


async def test_the_group_is_killed_before_its_leader_is_reaped(spawns: Spawns, monkeypatch: pytest.MonkeyPatch) -> None:
    # When the group is killed, its leader (the direct child) must still exist, at least as a zombie:
    # once reaped, its id could belong to another process (and group).
    seen: list[tuple[int, bool]] = []
    real = os.killpg

    def spy(pgid: int, signum: int) -> None:
        seen.append((pgid, Path(f"/proc/{pgid}").exists()))
        real(pgid, signum)

    monkeypatch.setattr(os, "killpg", spy)
    result = await run_python("print('done')\n", QUICK)
    assert result.outcome == "passed"
    ((pgid, _),) = spawns.started
    assert seen and all(pid == pgid and alive for pid, alive in seen)
    assert_gone(spawns)


async def test_processes_left_behind_are_killed_without_namespaces(
    spawns: Spawns, no_bwrap: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without namespaces and without the hook, the program forks two children that outlive it, one of them in
    # a new session (out of the group): killing the group (after the leader exited, before it is reaped) and
    # then what still names the run's directory is what ends them.
    bare = sandbox._Plan((), None, "rlimits+audit", sandbox._installation())
    monkeypatch.setattr(sandbox, "_weak_plan", lambda: bare)
    source = (
        "import os, time\n"
        "for leave in (False, True):\n"
        "    if os.fork() == 0:\n"
        "        if leave:\n"
        "            os.setsid()\n"
        "        time.sleep(60)\n"
        "        os._exit(0)\n"
        "print('forked')\n"
    )
    result = await sandbox._run(source, QUICK, run_name="__main__", allow_weak=True, audit=False)
    if os.geteuid() != 0:
        assert "BlockingIOError" in result.output  # RLIMIT_NPROC = 0 already stops it
        return
    assert result.outcome == "passed", result.output
    assert result.output == "forked\n"
    assert_gone(spawns)


# -- the boundary: bubblewrap -----------------------------------------------------------------------


def test_bubblewrap_is_the_isolation_where_it_works() -> None:
    label = isolation_available()
    assert label.endswith("rlimits+audit")
    if shutil.which("bwrap") is None:
        assert not strong_isolation()
        assert not label.startswith("bwrap")
    elif strong_isolation():
        assert label == "bwrap+rlimits+audit"


async def test_it_runs_as_nobody_on_the_base_interpreter(bwrap: None) -> None:
    source = "import os, sys\nprint(os.getuid(), os.getgid(), sys.executable, sys.prefix, sys.flags.isolated)\n"
    result = await run_python(source, QUICK)
    assert result.outcome == "passed", result.output
    uid, gid, executable, prefix, isolated = result.output.split()
    assert (uid, gid, isolated) == ("65534", "65534", "1")
    assert executable == _realpath(sandbox._installation().executable)
    assert _realpath(prefix) == _realpath(sys.base_prefix)
    assert not executable.startswith(sys.prefix + "/") or sys.prefix == sys.base_prefix


async def test_the_filesystem_holds_only_the_interpreter_and_the_run(bwrap: None) -> None:
    name = f"orx-sandbox-probe-{uuid.uuid4().hex}"
    targets = [f"/{name}", f"/root/{name}", f"/work/{name}", f"/usr/{name}", f"/lib64/{name}", f"/dev/{name}"]
    source = (
        "import json, os\n"
        f"targets = {targets!r}\n"
        "written = []\n"
        "for path in targets:\n"
        "    try:\n"
        "        open(path, 'w').write('x')\n"
        "        written.append(path)\n"
        "    except OSError:\n"
        "        pass\n"
        "print(json.dumps({'root': sorted(os.listdir('/')), 'root_dir': sorted(os.listdir('/root')),\n"
        f"    'exists': [p for p in ('/work', '/work/main', '/etc', '/home', {SITE_PACKAGES!r}, {sys.prefix!r})\n"
        "               if os.path.exists(p)], 'written': written}))\n"
    )
    result = await run_bare(source)
    assert result.outcome == "passed", result.output
    seen = json.loads(result.output)
    installation = sandbox._installation()
    expected = {"dev", "proc", "tmp"} | {path.split("/")[1] for path in installation.binds}
    assert set(seen["root"]) == expected
    assert {"work", "etc", "home"}.isdisjoint(seen["root"])
    assert seen["root_dir"] == sorted({p.split("/")[2] for p in installation.binds if p.startswith("/root/")})
    assert seen["exists"] == ([sys.prefix] if sys.prefix == sys.base_prefix else [])
    assert seen["written"] == []
    for path in targets:
        assert not _exists(path)


async def test_the_base_installations_site_packages_are_empty(bwrap: None) -> None:
    hidden = [p for p in sandbox._installation().masks]
    if not hidden:
        pytest.skip("the base installation has no site-packages under its standard library")
    result = await run_bare(f"import os\nprint([os.listdir(p) for p in {hidden!r}])\n")
    assert result.outcome == "passed", result.output
    assert result.output == repr([[] for _ in hidden]) + "\n"
    # The hook refuses them too.
    hooked = await run_python(f"import os\nprint(os.listdir({hidden[0]!r}))\n", QUICK)
    assert hooked.outcome == "blocked"


TOKENIZERS_ESCAPE = """
import sys
sys.path.append({site!r})
from tokenizers import Tokenizer
from tokenizers.models import BPE
Tokenizer(BPE()).save({target!r})
print("saved")
"""


@pytest.mark.parametrize("audit", [True, False], ids=["with-hook", "boundary-only"])
async def test_a_native_extension_from_site_packages_cannot_write_outside(
    bwrap: None, tmp_path: Path, audit: bool
) -> None:
    # The reviewer's escape: the environment's site-packages were readable, so a native extension loaded
    # from there wrote outside the run's directory.
    if not HAS_TOKENIZERS:
        pytest.skip("tokenizers is not installed here")
    target = tmp_path / "escaped.json"
    source = TOKENIZERS_ESCAPE.format(site=SITE_PACKAGES, target=str(target))
    result = await (run_python(source, QUICK) if audit else run_bare(source))
    assert result.outcome != "passed"
    assert "saved" not in result.output
    assert "No module named 'tokenizers'" in result.output  # not there at all
    assert not target.exists()


async def test_without_bwrap_the_hook_refuses_site_packages(no_bwrap: None, tmp_path: Path) -> None:
    if not HAS_TOKENIZERS:
        pytest.skip("tokenizers is not installed here")
    target = tmp_path / "escaped.json"
    source = TOKENIZERS_ESCAPE.format(site=SITE_PACKAGES, target=str(target))
    result = await run_python(source, QUICK, allow_weak=True)
    assert result.outcome == "blocked", result.output
    assert "bwrap" not in result.isolation
    assert not target.exists()


async def test_the_network_namespace_has_only_loopback() -> None:
    if "bwrap" not in isolation_available() and "namespace" not in isolation_available():
        pytest.skip("no namespaces on this machine")
    # if_nameindex has no audit event: this sees the namespace itself, not the hook.
    result = await run_python("import socket\nprint(sorted(name for _, name in socket.if_nameindex()))\n", QUICK)
    assert result.outcome == "passed"
    assert result.output.strip() == "['lo']"


async def test_without_the_hook_no_connection_reaches_a_local_listener(bwrap: None) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        source = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'leak')\n"
        result = await run_bare(source)
        assert result.outcome == "failed"
        assert "OSError" in result.detail or "Error" in result.detail
        with pytest.raises(BlockingIOError):
            listener.accept()


async def test_setsid_does_not_escape_the_kill(bwrap: None, spawns: Spawns) -> None:
    source = "import os\nos.setsid()\nprint('new session', flush=True)\nwhile True:\n    pass\n"
    result = await run_python(source, SandboxLimits(timeout_s=1.5, memory_mb=256))
    assert result.outcome == "timeout"
    assert_gone(spawns)


# -- what the program may not do (the audit hook) ---------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "import os\nwhile True:\n    os.fork()\n",
        "import os\nos.fork()\n",
        "import subprocess\nsubprocess.run(['true'])\n",
        "import os\nos.system('true')\n",
        "import os\nos.execv('/bin/true', ['true'])\n",
        "import _posixsubprocess\n_posixsubprocess.fork_exec()\n",
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
    ],
    ids=["fork-bomb", "fork", "subprocess", "system", "exec", "fork_exec", "fork-bomb-catching"],
)
async def test_processes_are_refused_and_nothing_survives(spawns: Spawns, source: str) -> None:
    result = await run_python(source, SandboxLimits(timeout_s=1.5, memory_mb=256))
    assert result.outcome == "blocked"
    assert result.detail.startswith("blocked: process (")
    assert_gone(spawns)


@pytest.mark.parametrize(
    "connect",
    [
        "import socket\nsocket.create_connection(('127.0.0.1', PORT), timeout=2).sendall(b'leak')\n",
        "import _socket\ns = _socket.socket()\ns.settimeout(2)\ns.connect(('127.0.0.1', PORT))\n",
    ],
    ids=["socket", "_socket"],
)
async def test_no_connection_reaches_a_local_listener(connect: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        result = await run_python(connect.replace("PORT", str(port)), QUICK)
        assert result.outcome != "passed"
        assert result.detail.startswith("blocked: network (socket.")
        with pytest.raises(BlockingIOError):
            listener.accept()


async def test_reading_a_file_outside_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cr3t-value-42\n")
    for source in (
        f"print(open({str(secret)!r}).read())\n",
        f"import os\nfd = os.open({str(secret).encode()!r}, os.O_RDONLY)\nprint(os.read(fd, 100))\n",
        "import os\nprint(os.listdir('..'))\nprint(open('../../' + " + repr(str(secret).lstrip("/")) + ").read())\n",
        f"from pathlib import Path\nprint(Path({str(secret)!r}).read_text())\n",
        "print(open('/proc/self/status').read())\n",
    ):
        result = await run_python(source, QUICK)
        assert result.outcome == "blocked", source
        assert result.detail.startswith("blocked: file ("), source
        assert "s3cr3t" not in result.detail
        assert "s3cr3t" not in result.output
        assert "Uid:" not in result.output


async def test_etc_passwd_is_refused() -> None:
    result = await run_python("print(open('/etc/passwd').read())\n", QUICK)
    assert result.outcome == "blocked"
    assert result.detail == "blocked: file (open)"
    assert "root:" not in result.output


async def test_writing_outside_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "written.txt"
    result = await run_python(f"open({str(target)!r}, 'w').write('x')\n", QUICK)
    assert result.outcome == "blocked"
    assert not target.exists()


async def test_proc_self_mem_cannot_be_opened_for_writing() -> None:
    source = "f = open('/proc/self/mem', 'r+b')\nprint('opened')\n"
    result = await run_python(source, QUICK)
    assert result.outcome == "blocked"
    assert result.detail == "blocked: file (open)"
    assert "opened" not in result.output


async def test_native_code_is_refused() -> None:
    for source in ("import ctypes\n", "import mmap\nmmap.mmap(-1, 4096)\n"):
        result = await run_python(source, QUICK)
        assert result.outcome == "blocked", source
        assert result.detail.startswith("blocked: native code ("), source


# The reviewer's second escape: a refusal's traceback ends in the hook's frame, whose locals hold the
# functions whose default arguments are the hook's settings; replacing them widened the allowed paths.
# Every step is tried and its failure ignored, so that the final reads show whether anything got through.
TAMPER_VIA_TRACEBACK = """
def attempt(step):
    try:
        return step()
    except Exception as exc:
        print("refused:", type(exc).__name__, exc)

def innermost():
    try:
        open(SECRET)
    except PermissionError as exc:
        tb = exc.__traceback__
        while tb.tb_next is not None:
            tb = tb.tb_next
        return tb

tb = innermost()
frame = attempt(lambda: tb.tb_frame)
functions = []
if frame is not None:
    functions = [value for value in frame.f_locals.values() if callable(value) and hasattr(value, "__defaults__")]
for function in functions:
    def widen(function=function):
        function.__defaults__ = tuple(("/",) if isinstance(d, tuple) else d for d in function.__defaults__ or ())
    attempt(widen)
for path in (SECRET, "/proc/self/status"):
    attempt(lambda: print(open(path).read()))
"""

# The same through frames reached from code of the program that the hook calls (a ``__class__``).
TAMPER_VIA_CALLBACK = """
import sys

def attempt(step):
    try:
        return step()
    except Exception as exc:
        print("refused:", type(exc).__name__, exc)

frames = []

class Path(str):
    @property
    def __class__(self):
        frame = sys._getframe(1)
        while frame is not None:
            frames.append(frame)
            frame = frame.f_back
        return str

attempt(lambda: open(Path(SECRET)))
print("frames reached:", [frame.f_code.co_name for frame in frames])
for frame in frames:
    for value in list(frame.f_locals.values()):
        if callable(value) and getattr(value, "__defaults__", None):
            def widen(function=value):
                function.__defaults__ = tuple(
                    ("/",) if isinstance(d, tuple) else d for d in function.__defaults__
                )
            attempt(widen)
        if isinstance(value, list):
            value.clear()
for path in (SECRET, "/proc/self/status"):
    attempt(lambda: print(open(path).read()))
"""


@pytest.mark.parametrize("program", [TAMPER_VIA_TRACEBACK, TAMPER_VIA_CALLBACK], ids=["traceback", "callback"])
async def test_the_hooks_settings_cannot_be_widened(tmp_path: Path, program: str) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cr3t-value-42\n")
    result = await run_python(f"SECRET = {str(secret)!r}\n{program}", QUICK)
    assert result.outcome == "blocked", result.output
    assert "s3cr3t" not in result.output
    assert "Uid:" not in result.output  # /proc/self/status is there under bwrap: only the hook refuses it
    assert "refused: PermissionError sandbox:" in result.output
    if program is TAMPER_VIA_TRACEBACK:
        assert "object.__getattr__ tb_frame is not allowed" in result.output
    else:
        assert "object.__setattr__ __defaults__ is not allowed" in result.output


async def test_the_parents_secrets_are_not_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-secret")
    result = await run_python("import os\nprint(dict(os.environ))\n", QUICK)
    assert result.outcome == "passed"
    assert "'PATH'" in result.output
    assert "sk-or-secret" not in result.output
    assert "OPENROUTER_API_KEY" not in result.output


async def test_ordinary_library_code_is_not_refused() -> None:
    source = (
        "import collections, dataclasses, fractions, functools, hashlib, heapq, itertools, json, math\n"
        "import random, re, statistics, string, subprocess, tempfile, traceback, types, typing\n"
        "Point = collections.namedtuple('Point', 'x y')\n"
        "T = typing.TypeVar('T')\n"
        "@dataclasses.dataclass\nclass Box:\n    size: int\n"
        "with tempfile.TemporaryFile() as handle:\n    handle.write(b'ok')\n"
        "try:\n    1 / 0\nexcept ZeroDivisionError:\n    lines = traceback.format_exc()\n"
        "print(Point(1, 2), Box(3), math.comb(5, 2), hashlib.sha256(b'').hexdigest()[:8], 'ZeroDivision' in lines)\n"
    )
    result = await run_python(source, QUICK)
    assert result.outcome == "passed", result.output
    assert "Point(x=1, y=2) Box(size=3) 10 e3b0c442 True" in result.output


# -- without bubblewrap -----------------------------------------------------------------------------


async def test_without_bwrap_runs_are_refused_unless_weak_is_allowed(no_bwrap: None, spawns: Spawns) -> None:
    refused = await run_python("print('hello')\n", QUICK)
    assert refused.outcome == "error"
    assert refused.detail.startswith("sandbox unavailable")
    assert "install" in refused.detail and "bubblewrap" in refused.detail
    assert refused.output == ""
    assert spawns.started == []
    allowed = await run_python("print('hello')\n", QUICK, allow_weak=True)
    assert allowed.outcome == "passed"
    assert allowed.output == "hello\n"
    assert allowed.isolation == isolation_available()
    assert not allowed.isolation.startswith("bwrap")
    assert len(spawns.started) == 1


async def test_without_bwrap_humaneval_is_refused_unless_weak_is_allowed(no_bwrap: None) -> None:
    test = "def check(candidate):\n    assert candidate([1, 2]) == 3\n"
    answer = "    return sum(values)\n"
    refused = await check_humaneval(answer, prompt=PROMPT, test=test, entry_point="total", limits=QUICK)
    assert refused["correct"] is False
    assert refused["detail"].startswith("sandbox unavailable")
    allowed = await check_humaneval(
        answer, prompt=PROMPT, test=test, entry_point="total", limits=QUICK, allow_weak=True
    )
    assert allowed == {"correct": True, "score": None, "detail": "passed"}


# -- HumanEval --------------------------------------------------------------------------------------


def _rows() -> list[dict[str, str]]:
    if not HUMANEVAL.exists():
        return []
    with HUMANEVAL.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


ROWS = _rows()
SAMPLE = ROWS[::14]  # 12 items spread over the 164


def _row(task_id: str) -> dict[str, str]:
    if not ROWS:
        pytest.skip(f"{HUMANEVAL} is missing")
    return next(row for row in ROWS if row["task_id"] == task_id)


def test_the_sample_is_spread_over_the_file() -> None:
    if not ROWS:
        pytest.skip(f"{HUMANEVAL} is missing")
    assert len(ROWS) == 164
    assert len(SAMPLE) == 12
    assert SAMPLE[-1]["task_id"] == "HumanEval/154"


async def test_every_canonical_solution_passes_and_every_none_body_fails() -> None:
    if not ROWS:
        pytest.skip(f"{HUMANEVAL} is missing")
    gate = asyncio.Semaphore(4)

    async def check(row: dict[str, str], answer: str) -> tuple[str, dict[str, Any]]:
        async with gate:
            verdict = await check_humaneval(
                answer, prompt=row["prompt"], test=row["test"], entry_point=row["entry_point"], limits=QUICK
            )
        return row["task_id"], dict(verdict)

    canonical = await asyncio.gather(*(check(row, row["canonical_solution"]) for row in ROWS))
    none = await asyncio.gather(*(check(row, "    return None\n") for row in ROWS))
    assert [(task, v) for task, v in canonical if v != {"correct": True, "score": None, "detail": "passed"}] == []
    assert [(task, v) for task, v in none if v["correct"] or not v["detail"].startswith("failed: ")] == []


@pytest.mark.parametrize("row", SAMPLE, ids=[row["task_id"] for row in SAMPLE])
async def test_humaneval_a_fenced_canonical_answer_passes(row: dict[str, str]) -> None:
    prompt, test, entry = row["prompt"], row["test"], row["entry_point"]
    fenced = (
        f"Here is `{entry}`:\n\n```python\n{prompt}{row['canonical_solution']}```\n\nIt walks the input once; "
        "the docstring's examples hold.\n\n```python\nprint('example usage')\n```\n"
    )
    verdict = await check_humaneval(fenced, prompt=prompt, test=test, entry_point=entry, limits=QUICK)
    assert verdict == {"correct": True, "score": None, "detail": "passed"}


@pytest.mark.parametrize(
    ("stop", "detail"),
    [
        ("import sys\nsys.exit(0)", "failed: exited with status 0 before its end"),
        ("raise SystemExit(0)", "failed: exited with status 0 before its end"),
        ("raise SystemExit", "failed: exited with status 0 before its end"),
        ("import os\nos._exit(0)", "failed: stopped before its end (exit status 0)"),
    ],
    ids=["sys.exit(0)", "SystemExit(0)", "SystemExit", "os._exit(0)"],
)
async def test_a_wrong_answer_that_exits_before_check_is_not_correct(stop: str, detail: str) -> None:
    # OpenAI's harness counts these as failures: a pass means check(entry_point) returned.
    test = "def check(candidate):\n    assert candidate([1, 2]) == 3\n"
    answer = f"```python\ndef total(values):\n    return None\n\n{stop}\n```"
    verdict = await check_humaneval(answer, prompt=PROMPT, test=test, entry_point="total", limits=QUICK)
    assert verdict == {"correct": False, "score": None, "detail": detail}


async def test_a_prompts_helpers_are_kept_for_a_whole_function_answer() -> None:
    row = _row("HumanEval/38")  # decode_cyclic calls the prompt's encode_cyclic
    answer = "```python\ndef decode_cyclic(s: str):\n    return encode_cyclic(encode_cyclic(s))\n```"
    verdict = await check_humaneval(
        answer, prompt=row["prompt"], test=row["test"], entry_point=row["entry_point"], limits=QUICK
    )
    assert verdict == {"correct": True, "score": None, "detail": "passed"}


async def test_a_main_block_in_the_answer_does_not_run() -> None:
    row = _row("HumanEval/0")
    answer = (
        "```python\nfrom typing import List\n\n"
        "def has_close_elements(numbers: List[float], threshold: float) -> bool:\n"
        "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n\n"
        "if __name__ == '__main__':\n    print(has_close_elements(list(map(float, input().split())), 0.5))\n```"
    )
    verdict = await check_humaneval(
        answer, prompt=row["prompt"], test=row["test"], entry_point=row["entry_point"], limits=QUICK
    )
    assert verdict["correct"] is True


async def test_a_humaneval_timeout_reads_as_one() -> None:
    row = _row("HumanEval/0")
    verdict = await check_humaneval(
        "    while True:\n        pass\n",
        prompt=row["prompt"],
        test=row["test"],
        entry_point=row["entry_point"],
        limits=SandboxLimits(timeout_s=1.0, memory_mb=256),
    )
    assert verdict == {"correct": False, "score": None, "detail": "timeout after 1 s"}


PROMPT = 'from typing import List\n\n\ndef total(values: List[int]) -> int:\n    """Sum of values."""\n'


def test_extract_takes_the_block_that_defines_the_entry_point() -> None:
    answer = (
        "First a helper you might like:\n\n```python\ndef unrelated():\n    return 1\n```\n\n"
        "The solution:\n\n```python\ndef total(values):\n    return sum(values)\n```\n\n"
        "Usage:\n\n```python\nprint(total([1, 2]))\n```\n"
    )
    program = extract_program(answer, PROMPT, "total")
    assert program == "from typing import List\n\n\ndef total(values):\n    return sum(values)\n"


def test_extract_prefers_the_last_defining_block() -> None:
    answer = (
        "```python\ndef total(values):\n    return 0\n```\n\nOn reflection that is wrong; fixed:\n\n"
        "```py\ndef total(values):\n    return sum(values)\n```"
    )
    assert extract_program(answer, PROMPT, "total").endswith("def total(values):\n    return sum(values)\n")


def test_extract_joins_blocks_without_a_definition_as_a_completion() -> None:
    answer = "The body:\n\n```python\n    result = sum(values)\n```\nthen\n```\n    return result\n```\n"
    program = extract_program(answer, PROMPT, "total")
    assert program == PROMPT + "    result = sum(values)\n\n    return result\n"


def test_extract_keeps_an_unfenced_completion_and_indents_one_at_the_margin() -> None:
    assert extract_program("    return sum(values)\n", PROMPT, "total") == PROMPT + "    return sum(values)\n"
    assert extract_program("return sum(values)", PROMPT, "total") == PROMPT + "    return sum(values)\n"


def test_extract_reads_an_unclosed_fence_to_the_end() -> None:
    answer = "```python\ndef total(values):\n    return sum(values)\n"
    assert extract_program(answer, PROMPT, "total").endswith("def total(values):\n    return sum(values)\n")


def test_extract_strips_the_simulated_answer_label() -> None:
    fenced = f"{LABEL}\n\nHere it is.\n\n```python\n{PROMPT}    return sum(values)\n```"
    program = extract_program(fenced, PROMPT, "total")
    assert "simulated answer" not in program
    # The prompt's imports first, then the block (which repeats them: harmless).
    assert program == "from typing import List\n\n\n" + PROMPT + "    return sum(values)\n"
    bare = extract_program(f"{LABEL}\n    return sum(values)\n", PROMPT, "total")
    assert bare == PROMPT + "    return sum(values)\n"


async def test_a_prose_only_answer_fails() -> None:
    answer = "You should add the numbers together and return the total."
    program = extract_program(answer, PROMPT, "total")
    assert program == PROMPT + "    " + answer + "\n"
    test = "def check(candidate):\n    assert candidate([1, 2]) == 3\n"
    verdict = await check_humaneval(answer, prompt=PROMPT, test=test, entry_point="total", limits=QUICK)
    assert verdict["correct"] is False
    assert verdict["detail"].startswith("failed: SyntaxError")


def test_the_test_program_calls_check_on_the_entry_point() -> None:
    program = humaneval.test_program("def f():\n    return 1\n", "def check(c):\n    assert c() == 1\n", "f")
    assert program.endswith("\n\ncheck(f)\n")
    assert program.startswith("def f():")
