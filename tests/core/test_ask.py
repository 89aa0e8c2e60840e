"""``orchestratex ask``: the prompt from stdin, ``--critics 0``, ``--optimize-for``, and a friendly line when the
suite is not running (no traceback)."""

from __future__ import annotations

import argparse
import io
import os
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from orchestratex.ask import OPTIMIZE_FOR, START_HINT, AskUsageError, build_request, run_ask
from orchestratex.config import Settings
from orchestratex.errors import Unavailable
from orchestratex.grpc_server import GrpcServer, ServiceBinding, create_server
from orchestratex.v1 import orchestrator_pb2 as pb
from orchestratex.v1 import orchestrator_pb2_grpc
from services.cli import _parser

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _args(*argv: str) -> argparse.Namespace:
    return _parser().parse_args(["ask", *argv])


# ------------------------------------------------------------------------------ the request


def test_dash_reads_the_whole_prompt_from_stdin() -> None:
    text = "first line\nsecond line\n"
    assert build_request(_args("-"), io.StringIO(text)).prompt == text


@pytest.mark.parametrize("stdin", ["", "  \n\t\n"])
def test_an_empty_stdin_is_a_usage_error(stdin: str) -> None:
    with pytest.raises(AskUsageError, match="standard input"):
        build_request(_args("-"), io.StringIO(stdin))


def test_a_prompt_argument_does_not_touch_stdin() -> None:
    class Untouchable(io.StringIO):
        def read(self, size: int | None = -1) -> str:
            raise AssertionError("stdin was read")

    assert build_request(_args("hello"), Untouchable()).prompt == "hello"


def test_no_critics_means_one_round() -> None:
    request = build_request(_args("hi", "--critics", "0"))
    assert request.critic_count == 0 and request.HasField("critic_count")
    assert request.max_rounds == 1 and request.HasField("max_rounds")
    assert build_request(_args("hi", "--critics", "0", "--rounds", "1")).max_rounds == 1


def test_no_critics_with_more_rounds_is_a_usage_error() -> None:
    with pytest.raises(AskUsageError, match="--critics 0") as refused:
        build_request(_args("hi", "--critics", "0", "--rounds", "3"))
    assert "--rounds 3" in str(refused.value)


def test_unset_options_keep_the_servers_defaults() -> None:
    request = build_request(_args("hi"))
    assert not request.HasField("max_rounds") and not request.HasField("critic_count")
    assert not request.HasField("preferences")


@pytest.mark.parametrize("choice", sorted(OPTIMIZE_FOR))
def test_optimize_for_sends_the_weights_of_the_choice(choice: str) -> None:
    request = build_request(_args("hi", "--optimize-for", choice, "--model", "m/x"))
    weights = OPTIMIZE_FOR[choice]
    sent = {
        name: getattr(request.preferences, name)
        for name in ("quality_weight", "cost_weight", "latency_weight")
        if request.preferences.HasField(name)
    }
    assert sent == dict(weights or {})
    assert request.preferences.pinned_model == "m/x"


def test_optimize_for_refuses_an_unknown_choice(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        _args("hi", "--optimize-for", "vibes")
    assert exited.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def _browser_preferences() -> dict[str, dict[str, float] | None]:
    """``PREFERENCES`` of gateway/static/app.js, parsed (the browser's "Optimise for" menu)."""
    source = (ROOT / "gateway" / "static" / "app.js").read_text()
    block = re.search(r"const PREFERENCES = \{(.*?)\n\};", source, re.S)
    assert block is not None, "PREFERENCES not found in app.js"
    found: dict[str, dict[str, float] | None] = {}
    for name, body in re.findall(r"^\s*(\w+): (null|\{[^}]*\}),?$", block.group(1), re.M):
        found[name] = None if body == "null" else {k: float(v) for k, v in re.findall(r"(\w+): ([0-9.]+)", body)}
    return found


def test_the_choices_match_the_browsers() -> None:
    """One table in Python (:data:`OPTIMIZE_FOR`); the browser keeps a copy: they must not drift apart."""
    browser = _browser_preferences()
    assert browser == {name: (dict(w) if w is not None else None) for name, w in OPTIMIZE_FOR.items()}


# ------------------------------------------------------------------------------ against a server


class Orchestrator(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    """Completes every session at once, echoing the prompt; or refuses with UNAVAILABLE, as a draining one does."""

    def __init__(self) -> None:
        self.refuse = False
        self.prompts: list[str] = []

    async def Orchestrate(self, request: pb.OrchestrateRequest, ctx: Any) -> AsyncIterator[pb.OrchestrateResponse]:
        if self.refuse:
            raise Unavailable("the orchestrator is shutting down: not accepting new sessions (retry shortly)")
        self.prompts.append(request.prompt)
        yield pb.OrchestrateResponse(
            event=pb.OrchestrationEvent(
                session_id="s1",
                sequence=1,
                session_completed=pb.SessionCompleted(final_text=f"echo: {request.prompt}", rounds_used=1),
            )
        )


@pytest.fixture
async def orchestrator() -> AsyncIterator[tuple[Orchestrator, str]]:
    servicer = Orchestrator()
    srv: GrpcServer = create_server(
        [
            ServiceBinding(
                orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server,
                servicer,
                "orchestratex.v1.OrchestratorService",
            )
        ],
        "127.0.0.1:0",
    )
    await srv.start()
    yield servicer, f"127.0.0.1:{srv.port}"
    await srv.stop(0)


def _settings(tmp_path: Path) -> Settings:
    return Settings.from_env({"ORX_DATA_DIR": str(tmp_path)}, sections=())


async def test_a_prompt_from_stdin_reaches_the_orchestrator(
    tmp_path: Path, orchestrator: tuple[Orchestrator, str]
) -> None:
    servicer, target = orchestrator
    args = _args("-", "--target", target)
    out, err = io.StringIO(), io.StringIO()
    request = build_request(args, io.StringIO("piped prompt\n"))
    assert await run_ask(_settings(tmp_path), args, out, request=request, err=err) == 0
    assert servicer.prompts == ["piped prompt\n"]
    assert "echo: piped prompt" in out.getvalue() and err.getvalue() == ""


async def test_an_unavailable_orchestrator_is_reported_as_it_said(
    tmp_path: Path, orchestrator: tuple[Orchestrator, str]
) -> None:
    """A server that answers UNAVAILABLE is running: its own message is shown, not the "start it" hint."""
    servicer, target = orchestrator
    servicer.refuse = True
    args = _args("hi", "--target", target)
    err = io.StringIO()
    assert await run_ask(_settings(tmp_path), args, io.StringIO(), err=err) == 1
    assert err.getvalue() == (
        "orchestratex ask: UNAVAILABLE: the orchestrator is shutting down: not accepting new sessions (retry shortly)\n"
    )


async def test_nothing_listening_is_one_friendly_line(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and that nothing listens on
        sock.bind(("127.0.0.1", 0))
        target = f"127.0.0.1:{sock.getsockname()[1]}"
    err = io.StringIO()
    assert await run_ask(_settings(tmp_path), _args("hi", "--target", target), io.StringIO(), err=err) == 1
    assert err.getvalue() == f"orchestratex ask: cannot reach the orchestrator at {target}; {START_HINT}\n"


# ------------------------------------------------------------------------------ the command


def _ask(args: list[str], stdin: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "orchestratex"), "ask", *args],
        input=stdin,
        env={**os.environ, "ORX_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_command_exits_2_on_an_empty_stdin(tmp_path: Path) -> None:
    run = _ask(["-"], "", tmp_path)
    assert run.returncode == 2
    assert "orchestratex ask: error: the prompt read from standard input (`ask -`) is empty" in run.stderr
    assert "Traceback" not in run.stderr


def test_the_command_exits_2_on_critics_0_with_rounds(tmp_path: Path) -> None:
    run = _ask(["hi", "--critics", "0", "--rounds", "2"], "", tmp_path)
    assert run.returncode == 2 and "--critics 0" in run.stderr and "Traceback" not in run.stderr


def test_the_command_names_make_run_when_the_suite_is_down(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        target = f"127.0.0.1:{sock.getsockname()[1]}"
    run = _ask(["hi", "--target", target], "", tmp_path)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        f"orchestratex ask: cannot reach the orchestrator at {target}; start it with `make run` or `orchestratex up`"
    ]
