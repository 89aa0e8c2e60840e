"""HumanEval checking: the code to test from a model's answer, run with the item's tests in the sandbox.

An item is right when ``program + test + check(entry_point)`` runs to its end in :mod:`.sandbox` (the
dataset's ``check`` asserts): the sandbox appends a line after ``check(entry_point)`` that reports a token
generated for the run, so a program that stops before ``check`` returned (``sys.exit(0)``, ``raise
SystemExit``, ``os._exit(0)``) fails, as in OpenAI's harness. The program is what :func:`extract_program`
finds in the answer: models are asked for the whole function in one fenced block
(``suites.HUMANEVAL_INSTRUCTION``), but some answer with prose and several blocks, or with only the body;
both are handled. As in OpenAI's harness (``human_eval/execution.py``), the program does not run as
``__main__``, so a demonstration block under ``if __name__ == "__main__":`` (often reading ``input()``)
does not run.
"""

from __future__ import annotations

import re
import textwrap

from services.evaluation.records import Verdict
from services.evaluation.sandbox import DEFAULT_LIMITS, SandboxLimits, run_python

__all__ = ["check_humaneval", "extract_program", "test_program"]

_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+.-]*)[^\n]*\n(.*?)(?:^[ \t]*```[ \t]*$|\Z)", re.DOTALL | re.MULTILINE)
"""A fenced block: its language tag and its text; a block the answer never closes runs to the end."""
_PYTHON_TAGS = frozenset({"", "python", "python3", "py", "py3"})
_LABEL = re.compile(r"\A\s*_\(simulated answer[^\n]*\)_[ \t]*(?:\n|\Z)")
"""The line the simulator starts its answers with (``services/providers/simulator.py``, ``DRAFT_LABEL``)."""
_IMPORT = re.compile(r"^(?:import|from)[ \t]+\S.*$", re.MULTILINE)
_STATEMENT_START = ("def ", "async def ", "class ", "import ", "from ", "@", "#")
_RUN_NAME = "__humaneval__"


def _defines(entry_point: str) -> re.Pattern[str]:
    return re.compile(rf"^[ \t]*(?:async[ \t]+)?def[ \t]+{re.escape(entry_point)}[ \t]*\(", re.MULTILINE)


def extract_program(answer: str, prompt: str, entry_point: str) -> str:
    """The program to test from a model's ``answer`` to the HumanEval ``prompt``.

    The code is the last fenced block that defines ``def <entry_point>(`` (a later block is usually the
    corrected one), else every Python (or untagged) fenced block joined, else the whole answer when it has
    no fences. A leading simulator label line (``_(simulated answer · draft 0a1b2c3d)_``) is dropped.

    When the code defines the entry point, it comes after what the prompt has before its own
    ``def <entry_point>(``: the imports (prompts often import ``typing`` names) and the helper functions
    some prompts define and their solutions call (``is_palindrome``, ``encode_cyclic``, ``poly``); the
    code's own definitions come later and win. Otherwise the code is taken as a completion of the prompt
    (``prompt + code``), indented by four spaces if it starts at the margin.
    """
    text = _LABEL.sub("", answer, count=1)
    defines = _defines(entry_point)
    blocks = [(tag.lower(), body) for tag, body in _FENCE.findall(text)]
    if blocks:
        defining = [body for _, body in blocks if defines.search(body)]
        if defining:
            code = defining[-1]
        else:
            python = [body for tag, body in blocks if tag in _PYTHON_TAGS] or [body for _, body in blocks]
            code = "\n".join(python)
    else:
        code = text
    if defines.search(code):
        return _preamble(prompt, entry_point) + textwrap.dedent(code).strip("\n") + "\n"
    return _completion(prompt, code)


def _preamble(prompt: str, entry_point: str) -> str:
    """The prompt up to its ``def <entry_point>(``; only its import lines if it has no such line."""
    own = re.search(rf"^def[ \t]+{re.escape(entry_point)}[ \t]*\(", prompt, re.MULTILINE)
    head = prompt[: own.start()] if own else "\n".join(_IMPORT.findall(prompt))
    head = head.rstrip()
    return head + "\n\n\n" if head else ""


def _completion(prompt: str, code: str) -> str:
    lines = code.strip("\n").splitlines()
    first = next((line for line in lines if line.strip()), "")
    if first and not first[0].isspace() and not first.startswith(_STATEMENT_START):
        # A body written at the margin ("return sorted(x)"): it belongs inside the prompt's function.
        lines = [f"    {line}" if line.strip() else line for line in lines]
    head = prompt if prompt.endswith("\n") else prompt + "\n"
    return head + "\n".join(lines) + "\n"


def test_program(program: str, test: str, entry_point: str) -> str:
    """The program that passes when ``program`` passes the item's ``test`` (which defines ``check``)."""
    return program + "\n\n" + test + f"\n\ncheck({entry_point})\n"


async def check_humaneval(
    answer: str,
    *,
    prompt: str,
    test: str,
    entry_point: str,
    limits: SandboxLimits = DEFAULT_LIMITS,
    allow_weak: bool = False,
) -> Verdict:
    """Run the answer's program with the item's tests in the sandbox.

    ``detail`` is ``passed``, ``failed: <the exception's line>`` (``failed: AssertionError`` for a wrong
    result, ``failed: exited with status 0 before its end`` for ``sys.exit(0)`` before ``check``),
    ``timeout after 10 s``, ``memory limit (512 MB) exceeded``, ``blocked: network (socket.__new__)``,
    ``sandbox error: ...`` or ``sandbox unavailable: ...`` (no bubblewrap and not ``allow_weak``, see
    :func:`.sandbox.run_python`); ``correct`` is true only for ``passed``.
    """
    program = extract_program(answer, prompt, entry_point)
    result = await run_python(
        test_program(program, test, entry_point), limits, run_name=_RUN_NAME, allow_weak=allow_weak
    )
    if result.outcome == "passed":
        detail = "passed"
    elif result.outcome == "failed":
        detail = f"failed: {result.detail}"
    elif result.outcome == "timeout" and result.detail.startswith("timed out"):
        detail = f"timeout after {limits.timeout_s:g} s"
    elif result.outcome == "timeout":
        detail = f"timeout: {result.detail}"
    else:
        detail = result.detail
    if len(detail) > 300:
        detail = detail[:299] + "…"
    return Verdict(correct=result.outcome == "passed", score=None, detail=detail)
