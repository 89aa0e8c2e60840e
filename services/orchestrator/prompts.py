"""Versioned prompt templates (``prompts/<version>/*.txt``), filled with ``string.Template``.

Templates live in files, not in code, so they can be reviewed and changed (as a new version) without
touching the loop. ``$prompt``, ``$answer``, ``$feedback`` and ``$key`` are substituted in one pass, so
user text is never interpreted as a template.

Text that another model wrote (an answer under review, critiques) and, for critics, the user's prompt
are untrusted: they are pasted between ``<<<BEGIN NAME key>>>`` and ``<<<END NAME key>>>`` lines whose
``key`` is random for every call (and absent from the text), so no text can close its fence early or
pass for our own instructions; the system prompt says that fenced text is data. Each is also capped
(:data:`MAX_FENCED_CHARS`, keeping its head and tail).

A session's context (the caller's earlier messages, or its thread's earlier turns) reaches each call
differently. The author gets the earlier user and assistant turns as chat turns, in order, between our
system prompt and the request; the caller's own system messages follow our system prompt in a second
one, fenced as the person's instructions for the answer (``instructions_system.txt``), so they shape the
answer but cannot pass for ours. A critic gets the conversation as data: its most recent turns (at most
:data:`MAX_FENCED_CHARS` in all) each fenced as ``SYSTEM``, ``USER`` or ``ASSISTANT`` before the task
(``critique_conversation.txt``). Every call has one fence key, found in none of its texts.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from string import Template
from typing import Any

from orchestratex.v1 import common_pb2

DEFAULT_VERSION = "v2"
MAX_FENCED_CHARS = 24_000
"""The most of one untrusted text pasted into another model's prompt (about 6,000 tokens); also the most
of a conversation shown to a critic."""
_TURN_NAMES = {
    common_pb2.ROLE_SYSTEM: "SYSTEM",
    common_pb2.ROLE_USER: "USER",
    common_pb2.ROLE_ASSISTANT: "ASSISTANT",
}


def fence_key(*texts: str) -> str:
    """A random key for one call's fences, found in none of ``texts``."""
    while True:
        key = secrets.token_hex(8)
        if not any(key in text for text in texts):
            return key


def clip(text: str, limit: int = MAX_FENCED_CHARS) -> str:
    """``text`` cut to ``limit`` characters, keeping its head and tail around a note of what was left out."""
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    tail = limit - head
    return f"{text[:head]}\n[... {len(text) - limit:,} characters left out ...]\n{text[-tail:]}"


def recent(context: Sequence[common_pb2.ChatMessage], limit: int = MAX_FENCED_CHARS) -> list[common_pb2.ChatMessage]:
    """The most recent messages of ``context`` whose texts fit ``limit`` characters in all, oldest first
    (the newest alone, clipped, when it is longer)."""
    kept: list[common_pb2.ChatMessage] = []
    room = limit
    for message in reversed(context):
        if len(message.content) > room:
            if not kept:
                kept.append(common_pb2.ChatMessage(role=message.role, content=clip(message.content, limit)))
            break
        kept.append(message)
        room -= len(message.content)
    kept.reverse()
    return kept


def _split(
    context: Sequence[common_pb2.ChatMessage],
) -> tuple[list[str], list[common_pb2.ChatMessage]]:
    """The caller's system messages (their texts) and the other turns, each in order."""
    instructions = [m.content for m in context if m.role == common_pb2.ROLE_SYSTEM]
    turns = [m for m in context if m.role != common_pb2.ROLE_SYSTEM]
    return instructions, turns


def _message(role: common_pb2.Role, content: str) -> common_pb2.ChatMessage:
    return common_pb2.ChatMessage(role=role, content=content)


@dataclass(frozen=True)
class PromptSet:
    """The templates of one version."""

    version: str
    answer_system: str
    instructions_system: Template
    critique_system: str
    critique_user: Template
    critique_conversation: Template
    refine_system: str
    refine_user: Template
    critique_schema: dict[str, Any]

    @property
    def critique_schema_json(self) -> str:
        """The critique schema as sent to vendors: without ``$schema`` and ``title``, which strict modes
        of some vendors refuse."""
        wire = {k: v for k, v in self.critique_schema.items() if k not in ("$schema", "title")}
        return json.dumps(wire, separators=(",", ":"))

    def answer_messages(
        self, prompt: str, context: Sequence[common_pb2.ChatMessage] = ()
    ) -> list[common_pb2.ChatMessage]:
        """The author's first call: our system prompt, the caller's instructions (fenced), the earlier
        turns in order, then the request."""
        instructions, turns = _split(context)
        key = fence_key(prompt, *instructions, *(m.content for m in turns))
        return [
            _message(common_pb2.ROLE_SYSTEM, self.answer_system),
            *self._instructions(instructions, key),
            *turns,
            _message(common_pb2.ROLE_USER, prompt),
        ]

    def refine_messages(
        self, prompt: str, answer: str, feedback: str, context: Sequence[common_pb2.ChatMessage] = ()
    ) -> list[common_pb2.ChatMessage]:
        """The author's call to improve ``answer`` from ``feedback``: like :meth:`answer_messages`, with
        the refinement request (the answer and the reviews fenced) in place of the prompt.

        The prompt is the user's own request to this author; the answer and the reviews are fenced.
        """
        instructions, turns = _split(context)
        answer, feedback = clip(answer), clip(feedback)
        key = fence_key(prompt, answer, feedback, *instructions, *(m.content for m in turns))
        user = self.refine_user.safe_substitute(prompt=prompt, answer=answer, feedback=feedback, key=key)
        return [
            _message(common_pb2.ROLE_SYSTEM, self.refine_system),
            *self._instructions(instructions, key),
            *turns,
            _message(common_pb2.ROLE_USER, user),
        ]

    def refine(self, prompt: str, answer: str, feedback: str) -> tuple[str, str]:
        """System and user messages asking the author to improve ``answer`` from ``feedback`` (no context)."""
        messages = self.refine_messages(prompt, answer, feedback)
        return messages[0].content, messages[-1].content

    def critique(self, prompt: str, answer: str, context: Sequence[common_pb2.ChatMessage] = ()) -> tuple[str, str]:
        """System and user messages asking a critic to review ``answer``, without naming its author.

        Every text is untrusted here: the prompt and the answer are clipped and fenced with this call's
        random key, and so is each turn of the conversation before the prompt that is shown
        (:func:`recent`).
        """
        prompt, answer = clip(prompt), clip(answer)
        shown = recent(context)
        key = fence_key(prompt, answer, *(m.content for m in shown))
        user = self.critique_user.safe_substitute(prompt=prompt, answer=answer, key=key)
        if shown:
            turns = "\n\n".join(_fence(_TURN_NAMES[m.role], m.content, key) for m in shown)
            conversation = self.critique_conversation.safe_substitute(
                turns=turns, shown=len(shown), total=len(context), key=key
            )
            user = f"{conversation}\n\n{user}"
        return self.critique_system, user

    def _instructions(self, instructions: Sequence[str], key: str) -> list[common_pb2.ChatMessage]:
        """The caller's system messages as one system message of ours, fenced (none when there are none)."""
        if not instructions:
            return []
        text = self.instructions_system.safe_substitute(instructions="\n\n".join(instructions), key=key)
        return [_message(common_pb2.ROLE_SYSTEM, text)]


def _fence(name: str, text: str, key: str) -> str:
    return f"<<<BEGIN {name} {key}>>>\n{text}\n<<<END {name} {key}>>>"


def load_prompts(version: str = DEFAULT_VERSION) -> PromptSet:
    """Load a template version shipped with the package."""
    base = resources.files("services.orchestrator") / "prompts" / version

    def read(name: str) -> str:
        return (base / name).read_text(encoding="utf-8").strip()

    return PromptSet(
        version=version,
        answer_system=read("answer_system.txt"),
        instructions_system=Template(read("instructions_system.txt")),
        critique_system=read("critique_system.txt"),
        critique_user=Template(read("critique_user.txt")),
        critique_conversation=Template(read("critique_conversation.txt")),
        refine_system=read("refine_system.txt"),
        refine_user=Template(read("refine_user.txt")),
        critique_schema=json.loads(read("critique.schema.json")),
    )
