"""The code-execution sandbox (services/evaluation/sandbox.py) and the HumanEval checker built on it.

Every test runs real child interpreters: what is checked is what the child could do, seen from outside
(the listener that got no connection, the process group that is empty, the directory that is gone).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from services.evaluation import humaneval
from services.evaluation.humaneval import check_humaneval, extract_program
from services.evaluation.sandbox import SandboxLimits, isolation_available, run_python

EVAL_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "eval"
HUMANEVAL = EVAL_DIR / "humaneval.jsonl"
QUICK = SandboxLimits(timeout_s=5.0, memory_mb=256)
LABEL = "_(simulated answer · draft 0a1b2c3d)_"


@dataclass
class Spawns:
    """The sandbox children started during a test: (process group id, working directory)."""

    started: list[tuple[int, str]] = field(default_factory=list)
    event: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
def spawns(monkeypatch: pytest.MonkeyPatch) -> Spawns:
    record = Spawns()
    real = asyncio.create_subprocess_exec

    async def spy(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        proc = await real(*args, **kwargs)
        record.started.append((proc.pid, kwargs["cwd"]))
        record.event.set()
        return proc

    monkeypatch.setattr(asyncio, "create_subprocess_exec", spy)
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


def _exists(path: Path) -> bool:
    return path.exists()


def assert_gone(spawns: Spawns) -> None:
    assert spawns.started, "the sandbox started no process"
    for pgid, directory in spawns.started:
        assert group_members(pgid) == []
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


async def test_an_assertion_failure_fails_with_its_name() -> None:
    result = await run_python("x = 1 + 1\nassert x == 3, 'arithmetic'\n", QUICK)
    assert result.outcome == "failed"
    assert result.detail == "AssertionError: arithmetic"
    assert "Traceback" in result.output


async def test_a_syntax_error_fails() -> None:
    result = await run_python("def f(:\n    pass\n", QUICK)
    assert result.outcome == "failed"
    assert result.detail.startswith("SyntaxError")


async def test_exiting_before_the_end_is_not_a_pass() -> None:
    result = await run_python("import os\nos._exit(0)\nassert False\n", QUICK)
    assert result.returncode == 0
    assert result.outcome == "failed"
    assert "before its end" in result.detail


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


# -- what the program may not do --------------------------------------------------------------------


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


async def test_the_network_namespace_has_only_loopback() -> None:
    if "namespace" not in isolation_available():
        pytest.skip("no namespaces on this machine")
    # if_nameindex has no audit event: this sees the namespace itself, not the hook.
    result = await run_python("import socket\nprint(sorted(name for _, name in socket.if_nameindex()))\n", QUICK)
    assert result.outcome == "passed"
    assert result.output.strip() == "['lo']"


def test_namespaces_are_used_where_the_kernel_allows_them() -> None:
    label = isolation_available()
    assert label.endswith("rlimits+audit")
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("no unshare here")
    probe = subprocess.run(
        [unshare, "--user", "--map-root-user", "--net", "true"], capture_output=True, timeout=30, check=False
    )
    if probe.returncode == 0:
        assert label.startswith("namespace+")


async def test_reading_a_file_outside_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cr3t-value-42\n")
    for source in (
        f"print(open({str(secret)!r}).read())\n",
        f"import os\nfd = os.open({str(secret).encode()!r}, os.O_RDONLY)\nprint(os.read(fd, 100))\n",
        "import os\nprint(os.listdir('..'))\nprint(open('../../' + " + repr(str(secret).lstrip("/")) + ").read())\n",
        f"from pathlib import Path\nprint(Path({str(secret)!r}).read_text())\n",
    ):
        result = await run_python(source, QUICK)
        assert result.outcome == "blocked", source
        assert result.detail.startswith("blocked: file ("), source
        assert "s3cr3t" not in result.detail
        assert "s3cr3t" not in result.output


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


async def test_native_code_is_refused() -> None:
    for source in ("import ctypes\n", "import mmap\nmmap.mmap(-1, 4096)\n"):
        result = await run_python(source, QUICK)
        assert result.outcome == "blocked", source
        assert result.detail.startswith("blocked: native code ("), source


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
        "import random, re, statistics, string, subprocess, tempfile, typing\n"
        "Point = collections.namedtuple('Point', 'x y')\n"
        "T = typing.TypeVar('T')\n"
        "@dataclasses.dataclass\nclass Box:\n    size: int\n"
        "with tempfile.TemporaryFile() as handle:\n    handle.write(b'ok')\n"
        "print(Point(1, 2), Box(3), math.comb(5, 2), hashlib.sha256(b'').hexdigest()[:8])\n"
    )
    result = await run_python(source, QUICK)
    assert result.outcome == "passed", result.output
    assert "Point(x=1, y=2) Box(size=3) 10 e3b0c442" in result.output


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


@pytest.mark.parametrize("row", SAMPLE, ids=[row["task_id"] for row in SAMPLE])
async def test_humaneval_canonical_passes_and_a_wrong_body_fails(row: dict[str, str]) -> None:
    prompt, test, entry = row["prompt"], row["test"], row["entry_point"]
    completion = row["canonical_solution"]
    fenced = (
        f"Here is `{entry}`:\n\n```python\n{prompt}{completion}```\n\nIt walks the input once; "
        "the docstring's examples hold.\n\n```python\nprint('example usage')\n```\n"
    )
    checks = await asyncio.gather(
        check_humaneval(completion, prompt=prompt, test=test, entry_point=entry, limits=QUICK),
        check_humaneval(fenced, prompt=prompt, test=test, entry_point=entry, limits=QUICK),
        check_humaneval("    return None\n", prompt=prompt, test=test, entry_point=entry, limits=QUICK),
    )
    as_completion, as_fenced, wrong = checks
    assert as_completion == {"correct": True, "score": None, "detail": "passed"}
    assert as_fenced == {"correct": True, "score": None, "detail": "passed"}
    assert wrong["correct"] is False
    assert wrong["detail"].startswith("failed: ")


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
