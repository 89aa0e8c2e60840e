"""What the OpenAI-compatible surface writes: progress text, completion objects and chunks, and the SSE stream.

:class:`Progress` turns a session's events into the lines a chat UI shows as "thinking" (the selection, each
draft, each critic's score and main point, each round's decision); :class:`Completions` builds
``chat.completion`` objects and ``chat.completion.chunk`` s; :class:`ChunkStream` writes chunks as Server-Sent
Events (``data: <json>``, blank line; ``data: [DONE]`` at the end) with ``: keep-alive`` comments every
``heartbeat`` seconds while nothing else is written (critics at work), as OpenRouter does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any, Final

import orjson
from aiohttp import web

from orchestratex.v1 import common_pb2, orchestrator_pb2, providers_pb2

log = logging.getLogger(__name__)

Json = dict[str, Any]

SESSION_HEADER: Final = "X-OrchestrateX-Session-Id"
_MAIN_POINT_CHARS: Final = 200
_FINISH: Final[dict[int, str]] = {
    providers_pb2.FINISH_REASON_STOP: "stop",
    providers_pb2.FINISH_REASON_LENGTH: "length",
    providers_pb2.FINISH_REASON_CONTENT_FILTER: "content_filter",
}
#: The final answer is sent in content deltas of at most this many characters.
CONTENT_PIECE_CHARS: Final = 2000


def usage_json(usage: common_pb2.Usage, cost: float | None = None) -> Json:
    """OpenAI's ``usage`` (with OpenRouter's ``cost`` in US dollars) from our ``Usage``."""
    total = usage.total_tokens or usage.prompt_tokens + usage.completion_tokens
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": total,
        "cost": usage.cost_usd if cost is None else cost,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def finish_reason(reason: int) -> str:
    """OpenAI's ``finish_reason`` for a providers ``FinishReason`` (a completed call: ``stop`` by default)."""
    return _FINISH.get(reason, "stop")


def session_info(session_id: str, done: orchestrator_pb2.SessionCompleted | None = None) -> Json:
    """The ``orchestratex`` object of a response: the session and how it ended."""
    info: Json = {"session_id": session_id}
    if done is not None:
        info.update(
            best_model=done.best_model,
            best_round=done.best_round,
            rounds_used=done.rounds_used,
            final_score=done.final_score,
            unscored=done.unscored,
            stop_reason=orchestrator_pb2.StopReason.Name(done.stop_reason).removeprefix("STOP_REASON_").lower(),
        )
    return info


def _short(name: str, prefix: str) -> str:
    return name.removeprefix(prefix).lower().replace("_", " ")


def _main_point(critique: orchestrator_pb2.CritiqueCompleted) -> str:
    for items in (critique.weaknesses, critique.suggestions):
        for item in items:
            if item.strip():
                return _clip(item)
    return _clip(critique.rationale.split(". ")[0])


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAIN_POINT_CHARS else text[: _MAIN_POINT_CHARS - 1] + "…"


class Progress:
    """A session's progress in words, one line per step (shadow evaluation left out)."""

    def __init__(self) -> None:
        self._rounds_writing: set[int] = set()

    def text(self, event: orchestrator_pb2.OrchestrationEvent) -> str | None:
        """The line for ``event`` (ending with a newline), or None when it adds nothing to show."""
        kind = event.WhichOneof("kind")
        if kind == "session_started":
            simulated = " (simulated models)" if event.session_started.simulated else ""
            return f"OrchestrateX session {event.session_id}{simulated}.\n"
        if kind == "model_selected":
            return self._selected(event.model_selected)
        if kind == "response_delta":
            delta = event.response_delta
            if delta.round in self._rounds_writing:
                return None
            self._rounds_writing.add(delta.round)
            what = "the answer" if delta.round == 1 else "a refinement"
            return f"Round {delta.round}: {delta.model} is writing {what}…\n"
        if kind == "response_completed":
            done = event.response_completed
            if done.shadow:
                return None
            served = ""
            if done.served_model and done.served_model != done.model:
                served = f" (served by {done.served_model})"
            return (
                f"Round {done.round}: draft ready{served}, {done.usage.completion_tokens} tokens, "
                f"${done.usage.cost_usd:.4f}.\n"
            )
        if kind == "critique_completed":
            critique = event.critique_completed
            if critique.shadow:
                return None
            point = _main_point(critique)
            return f"Round {critique.round}: {critique.critic_model} scores {critique.score:.1f}/10 — {point}\n"
        if kind == "round_completed":
            return self._round(event.round_completed)
        if kind == "provider_fallback":
            fallback = event.provider_fallback
            failure = _short(common_pb2.FailureKind.Name(fallback.failure_kind), "FAILURE_KIND_")
            return (
                f"Round {fallback.round}: {fallback.failed_model} failed ({failure}); "
                f"{fallback.replacement_model} takes over.\n"
            )
        if kind == "warning":
            warning = event.warning
            if warning.code == orchestrator_pb2.WARNING_CODE_SHADOW_FAILED:
                return None
            return f"Warning: {_clip(warning.message)}\n"
        if kind == "session_completed":
            end = event.session_completed
            score = "unscored" if end.unscored else f"score {end.final_score:.1f}"
            rounds = f"{end.rounds_used} round{'s' if end.rounds_used != 1 else ''}"
            return (
                f"Done: the answer of round {end.best_round} by {end.best_model} ({score}); {rounds}, "
                f"${end.total_cost_usd:.4f} in all.\n\n"
            )
        return None

    @staticmethod
    def _selected(selected: orchestrator_pb2.ModelSelected) -> str:
        analysis = selected.analysis
        domain = ""
        if analysis.primary_domain:
            name = _short(common_pb2.Domain.Name(analysis.primary_domain), "DOMAIN_")
            domain = f" for a {name} prompt ({analysis.confidence:.0%} sure)"
        critics = f"; critics: {', '.join(selected.critic_models)}" if selected.critic_models else "; no critics"
        defaults = " (selector unavailable: catalogue defaults)" if selected.from_defaults else ""
        return f"Selected {selected.primary_model}{domain}{critics}{defaults}.\n"

    @staticmethod
    def _round(done: orchestrator_pb2.RoundCompleted) -> str:
        if done.critics_scored:
            change = f", {done.score_change:+.1f}" if done.round > 1 else ""
            critics = f"{done.critics_scored} critic{'s' if done.critics_scored != 1 else ''}"
            score = f"score {done.aggregate_score:.1f} ({critics}{change})"
        else:
            score = "unscored"
        decision = "refining" if done.decision == orchestrator_pb2.ROUND_DECISION_CONTINUE else "stopping"
        reason = f": {_clip(done.reason)}" if done.reason else ""
        return f"Round {done.round}: {score}; {decision}{reason}\n"


class Completions:
    """Builds the objects of one completion: same ``id``, ``created`` and ``model`` throughout."""

    def __init__(self, completion_id: str, created: int, model: str, reasoning_field: str | None) -> None:
        self.id = completion_id
        self.created = created
        self.model = model
        self.reasoning_field = reasoning_field

    def completion(self, content: str, reasoning: str, finish: str, usage: Json, extra: Json | None = None) -> Json:
        """A whole ``chat.completion``."""
        message: Json = {"role": "assistant", "content": content, "refusal": None}
        if self.reasoning_field and reasoning:
            message[self.reasoning_field] = reasoning
        out: Json = {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": usage,
        }
        if extra:
            out.update(extra)
        return out

    def chunk(self, delta: Json, finish: str | None = None, extra: Json | None = None) -> Json:
        """One ``chat.completion.chunk`` with one choice."""
        out: Json = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }
        if extra:
            out.update(extra)
        return out

    def reasoning(self, text: str) -> Json | None:
        """A reasoning delta, or None when reasoning is not sent (``reasoning_field`` none)."""
        if not self.reasoning_field or not text:
            return None
        return self.chunk({self.reasoning_field: text})

    def usage_chunk(self, usage: Json) -> Json:
        """The last chunk: no choice, the usage (``stream_options.include_usage``)."""
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage,
        }


def pieces(text: str, size: int = CONTENT_PIECE_CHARS) -> list[str]:
    """``text`` in pieces of at most ``size`` characters (at least one piece, possibly empty)."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


class ChunkStream:
    """A ``text/event-stream`` of chunks with keep-alive comments.

    Writes raise ``ConnectionError`` once the client has gone; :meth:`close` stops the keep-alives.
    """

    def __init__(self, response: web.StreamResponse, heartbeat: float) -> None:
        self._response = response
        self._lock = asyncio.Lock()
        self._heartbeat = heartbeat
        self._pinger: asyncio.Task[None] | None = None

    @staticmethod
    def headers(session_id: str | None = None) -> Mapping[str, str]:
        """The response headers of a stream."""
        headers = {
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            # Reverse proxies (nginx) must not buffer the stream.
            "X-Accel-Buffering": "no",
        }
        if session_id:
            headers[SESSION_HEADER] = session_id
        return headers

    def start(self) -> None:
        """Start the keep-alive comments (after ``prepare``)."""
        self._pinger = asyncio.create_task(self._ping(), name="openai-sse-ping")

    async def send(self, data: Json | None) -> None:
        """``data: <json>`` (nothing for None)."""
        if data is not None:
            await self._write(b"data: " + orjson.dumps(data) + b"\n\n")

    async def done(self) -> None:
        """``data: [DONE]``, the end of a successful stream."""
        await self._write(b"data: [DONE]\n\n")

    async def _write(self, frame: bytes) -> None:
        async with self._lock:
            await self._response.write(frame)

    async def _ping(self) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            while True:
                await asyncio.sleep(self._heartbeat)
                await self._write(b": keep-alive\n\n")

    async def close(self) -> None:
        """Stop the keep-alives and end the response (quietly if the client has gone)."""
        if self._pinger is not None:
            self._pinger.cancel()
            await asyncio.gather(self._pinger, return_exceptions=True)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self._response.write_eof()
