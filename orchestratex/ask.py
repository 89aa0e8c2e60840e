"""``orchestratex ask``: run one orchestration over gRPC and show it live in the terminal."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

import grpc

from orchestratex.config import Settings
from orchestratex.grpc_client import open_channel
from orchestratex.v1 import orchestrator_pb2 as pb
from orchestratex.v1 import orchestrator_pb2_grpc

_STOP = {v.number: v.name.removeprefix("STOP_REASON_").lower() for v in pb.StopReason.DESCRIPTOR.values}


def build_request(args: argparse.Namespace) -> pb.OrchestrateRequest:
    """Turn command-line options into a request (unset options keep the server's defaults)."""
    req = pb.OrchestrateRequest(prompt=args.prompt, thread_id=args.thread)
    if args.rounds is not None:
        req.max_rounds = args.rounds
    if args.threshold is not None:
        req.quality_threshold = args.threshold
    if args.critics is not None:
        req.critic_count = args.critics
    if args.budget is not None:
        req.budget_usd = args.budget
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


async def run_ask(settings: Settings, args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Run the orchestration; exit code 0 when it completed, 1 otherwise."""
    printer = Printer(out)
    target = args.target or settings.common.peers["orchestrator"]
    async with open_channel(target, unary_timeout=settings.common.rpc_timeout) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        completed = False
        try:
            async for resp in stub.Orchestrate(build_request(args), timeout=3600):
                printer.show(resp.event)
                completed = completed or resp.event.HasField("session_completed")
        except grpc.aio.AioRpcError as err:
            print(f"orchestratex ask: {err.code().name}: {err.details()}", file=sys.stderr)
            return 1
    return 0 if completed else 1
