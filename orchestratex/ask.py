"""``orchestratex ask``: run one orchestration over gRPC and show it live in the terminal.

The command-line surface is checked here, before anything is sent (:func:`build_request` raises
:class:`AskUsageError`, which the command shows as a usage error, exit status 2): ``ask -`` reads the prompt
from standard input, ``--critics 0`` without ``--rounds`` means one round (nothing could score a refinement),
and ``--optimize-for`` sends the same preference weights as the browser's "Optimise for" choice
(:data:`OPTIMIZE_FOR`). A suite that is not running is one friendly line, not a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import TextIO

import grpc

from orchestratex.config import Settings
from orchestratex.grpc_client import open_channel
from orchestratex.v1 import orchestrator_pb2 as pb
from orchestratex.v1 import orchestrator_pb2_grpc

_STOP = {v.number: v.name.removeprefix("STOP_REASON_").lower() for v in pb.StopReason.DESCRIPTOR.values}

#: ``--optimize-for``: the selector's weights for each choice (None: the selector's own defaults, 1/0.3/0.2).
#: The browser app's "Optimise for" menu sends the same values (``PREFERENCES`` in gateway/static/app.js); a
#: change here must be made there too (tests/core/test_ask.py compares the two).
OPTIMIZE_FOR: Mapping[str, Mapping[str, float] | None] = {
    "balanced": None,
    "quality": {"quality_weight": 1.0, "cost_weight": 0.05, "latency_weight": 0.05},
    "cost": {"quality_weight": 0.4, "cost_weight": 1.0, "latency_weight": 0.1},
    "speed": {"quality_weight": 0.4, "cost_weight": 0.1, "latency_weight": 1.0},
}

#: What to tell someone whose suite is not running.
START_HINT = "start it with `make run` or `orchestratex up`"


class AskUsageError(ValueError):
    """The command line asks for something that cannot be sent (shown as a usage error, exit status 2)."""


def read_prompt(prompt: str, stdin: TextIO) -> str:
    """The prompt argument, or all of ``stdin`` when it is ``-`` (an empty one is an :class:`AskUsageError`)."""
    if prompt != "-":
        return prompt
    text = stdin.read()
    if not text.strip():
        raise AskUsageError("the prompt read from standard input (`ask -`) is empty")
    return text


def build_request(args: argparse.Namespace, stdin: TextIO | None = None) -> pb.OrchestrateRequest:
    """Turn command-line options into a request (unset options keep the server's defaults).

    ``--critics 0`` with no ``--rounds`` asks for one round: with no critic nothing can score a refinement, so
    the server would refuse its default of three. An explicit ``--rounds`` above 1 with it is refused here.
    """
    req = pb.OrchestrateRequest(prompt=read_prompt(args.prompt, stdin or sys.stdin), thread_id=args.thread)
    if args.critics == 0:
        if args.rounds is not None and args.rounds > 1:
            raise AskUsageError(
                "--critics 0 leaves nothing to score a refinement, so only one round can run; "
                f"got --rounds {args.rounds}"
            )
        req.max_rounds = 1
    if args.rounds is not None:
        req.max_rounds = args.rounds
    if args.threshold is not None:
        req.quality_threshold = args.threshold
    if args.critics is not None:
        req.critic_count = args.critics
    if args.budget is not None:
        req.budget_usd = args.budget
    weights = OPTIMIZE_FOR[getattr(args, "optimize_for", None) or "balanced"]
    if weights is not None:
        for name, value in weights.items():
            setattr(req.preferences, name, value)
    if args.model:
        req.preferences.pinned_model = args.model
    return req


class Printer:
    """Renders events as readable terminal output."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.streaming = False

    def _line(self, text: str = "") -> None:
        if self.streaming:
            self.out.write("\n")
            self.streaming = False
        self.out.write(text + "\n")
        self.out.flush()

    def show(self, event: pb.OrchestrationEvent) -> None:
        kind = event.WhichOneof("kind")
        if kind == "session_started":
            label = " [SIMULATED models]" if event.session_started.simulated else ""
            self._line(f"session {event.session_id}{label}")
        elif kind == "model_selected":
            sel = event.model_selected
            self._line(f"primary: {sel.primary_model}   critics: {', '.join(sel.critic_models) or '-'}")
            for cand in sel.candidates[:3]:
                self._line(f"  #{cand.rank} {cand.model} ({cand.score:.2f}) {cand.reason}")
        elif kind == "response_delta":
            if not self.streaming:
                self.out.write(f"\n--- round {event.response_delta.round} ({event.response_delta.model}) ---\n")
                self.streaming = True
            self.out.write(event.response_delta.text)
            self.out.flush()
        elif kind == "response_completed":
            resp = event.response_completed
            self._line(f"  [{resp.model}: {resp.usage.completion_tokens} tokens, ${resp.usage.cost_usd:.6f}]")
        elif kind == "critique_completed":
            c = event.critique_completed
            self._line(f"  critic {c.critic_model}: {c.score:g}/10 — {c.rationale[:160]}")
        elif kind == "round_completed":
            r = event.round_completed
            self._line(f"round {r.round}: score {r.aggregate_score:.2f} ({r.score_change:+.2f}) — {r.reason}")
        elif kind == "provider_fallback":
            f = event.provider_fallback
            self._line(f"! {f.failed_model} failed ({f.reason}); {f.replacement_model or 'no model'} takes over")
        elif kind == "warning":
            self._line(f"! {event.warning.message}")
        elif kind == "session_completed":
            done = event.session_completed
            self._line()
            score = "unscored" if done.unscored else f"score {done.final_score:.2f}"
            self._line(f"=== final answer (round {done.best_round}, {done.best_model}, {score}) ===")
            self._line(done.final_text)
            self._line(
                f"=== stopped: {_STOP.get(done.stop_reason, '?')} ({done.stop_detail}); rounds {done.rounds_used}; "
                f"cost ${done.total_cost_usd:.6f}; tokens {done.usage.total_tokens} ==="
            )
        elif kind == "session_failed":
            self._line(
                f"session failed: {event.session_failed.reason} (cost ${event.session_failed.total_cost_usd:.6f})"
            )


async def run_ask(
    settings: Settings,
    args: argparse.Namespace,
    out: TextIO = sys.stdout,
    request: pb.OrchestrateRequest | None = None,
    err: TextIO = sys.stderr,
) -> int:
    """Run the orchestration; exit code 0 when it completed, 1 otherwise.

    ``request`` is the one :func:`build_request` made from ``args`` (built here when not given). An orchestrator
    that cannot be reached is one line on ``err`` naming its address and how to start the suite.
    """
    request = request if request is not None else build_request(args)
    printer = Printer(out)
    target = args.target or settings.common.peers["orchestrator"]
    async with open_channel(target, unary_timeout=settings.common.rpc_timeout) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        completed = False
        received = False
        try:
            async for resp in stub.Orchestrate(request, timeout=3600):
                received = True
                printer.show(resp.event)
                completed = completed or resp.event.HasField("session_completed")
        except grpc.aio.AioRpcError as exc:
            if not received and _unreachable(exc, channel):
                print(f"orchestratex ask: cannot reach the orchestrator at {target}; {START_HINT}", file=err)
            else:
                print(f"orchestratex ask: {exc.code().name}: {exc.details()}", file=err)
            return 1
    return 0 if completed else 1


def _unreachable(exc: grpc.aio.AioRpcError, channel: grpc.aio.Channel) -> bool:
    """True when the call failed because no connection could be made (nothing listens there), as opposed to
    an UNAVAILABLE the orchestrator itself sent (e.g. while it shuts down) over a working connection."""
    if exc.code() != grpc.StatusCode.UNAVAILABLE:
        return False
    return channel.get_state(try_to_connect=False) != grpc.ChannelConnectivity.READY
