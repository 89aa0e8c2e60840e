"""A session's context: the conversation before the prompt it answers.

A session from ``messages`` has the caller's earlier messages (system, user and assistant turns, as
given: the caller decides what to send, so nothing is trimmed). A session with a ``thread_id`` sees the
thread's last :data:`THREAD_TURNS` prompts and final answers as messages, oldest dropped first until
they fit half of the smallest context window in the catalogue (the session then emits a
``CONTEXT_TRIMMED`` warning saying how many were left out). How each call shows the context is
:mod:`~services.orchestrator.prompts`' business.
"""

from __future__ import annotations

from orchestratex.usage import estimate_tokens
from orchestratex.v1 import common_pb2
from orchestratex.v1 import orchestrator_pb2 as pb
from services.orchestrator.store.base import SessionStore

THREAD_TURNS = 20
DEFAULT_CONTEXT_WINDOW = 32_768
"""Assumed when no model in the catalogue states its context length."""


async def session_context(
    store: SessionStore, tenant: str, req: pb.OrchestrateRequest, models: dict[str, common_pb2.ModelInfo]
) -> tuple[list[common_pb2.ChatMessage], int]:
    """The messages before the prompt of a (normalised) request, and how many thread turns were left out."""
    if req.messages:
        return list(req.messages[:-1]), 0
    return await thread_history(store, tenant, req.thread_id, models)


async def thread_history(
    store: SessionStore, tenant: str, thread_id: str, models: dict[str, common_pb2.ModelInfo]
) -> tuple[list[common_pb2.ChatMessage], int]:
    """Earlier turns of the thread as messages, and how many turns were left out to fit."""
    if not thread_id:
        return [], 0
    sessions = await store.thread_sessions(tenant, thread_id, THREAD_TURNS)
    windows = [m.context_length for m in models.values() if m.context_length > 0]
    budget = (min(windows) if windows else DEFAULT_CONTEXT_WINDOW) // 2
    turns = [(s.request.prompt, s.result.final_text) for s in sessions if s.result.final_text]
    trimmed = 0
    while turns and sum(estimate_tokens(p) + estimate_tokens(a) + 8 for p, a in turns) > budget:
        turns.pop(0)
        trimmed += 1
    messages: list[common_pb2.ChatMessage] = []
    for prompt, answer in turns:
        messages.append(common_pb2.ChatMessage(role=common_pb2.ROLE_USER, content=prompt))
        messages.append(common_pb2.ChatMessage(role=common_pb2.ROLE_ASSISTANT, content=answer))
    return messages, trimmed
