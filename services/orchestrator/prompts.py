"""Versioned prompt templates (``prompts/<version>/*.txt``), filled with ``string.Template``.

Templates live in files, not in code, so they can be reviewed and changed (as a new version) without
touching the loop. ``$prompt``, ``$answer``, ``$feedback`` and ``$key`` are substituted in one pass, so
user text is never interpreted as a template.

Text that another model wrote (an answer under review, critiques) and, for critics, the user's prompt
are untrusted: they are pasted between ``<<<BEGIN NAME key>>>`` and ``<<<END NAME key>>>`` lines whose
``key`` is random for every call (and absent from the text), so no text can close its fence early or
pass for our own instructions; the system prompt says that fenced text is data. Each is also capped
(:data:`MAX_FENCED_CHARS`, keeping its head and tail).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from importlib import resources
from string import Template
from typing import Any

DEFAULT_VERSION = "v2"
MAX_FENCED_CHARS = 24_000
"""The most of one untrusted text pasted into another model's prompt (about 6,000 tokens)."""


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


@dataclass(frozen=True)
class PromptSet:
    """The templates of one version."""

    version: str
    answer_system: str
    critique_system: str
    critique_user: Template
    refine_system: str
    refine_user: Template
    critique_schema: dict[str, Any]

    @property
    def critique_schema_json(self) -> str:
        """The critique schema as sent to vendors: without ``$schema`` and ``title``, which strict modes
        of some vendors refuse."""
        wire = {k: v for k, v in self.critique_schema.items() if k not in ("$schema", "title")}
        return json.dumps(wire, separators=(",", ":"))

    def critique(self, prompt: str, answer: str) -> tuple[str, str]:
        """System and user messages asking a critic to review ``answer``, without naming its author.

        Both texts are untrusted here: each is clipped and fenced with this call's random key.
        """
        prompt, answer = clip(prompt), clip(answer)
        key = fence_key(prompt, answer)
        return self.critique_system, self.critique_user.safe_substitute(prompt=prompt, answer=answer, key=key)

    def refine(self, prompt: str, answer: str, feedback: str) -> tuple[str, str]:
        """System and user messages asking the author to improve ``answer`` from ``feedback``.

        The prompt is the user's own request to this author; the answer and the reviews are fenced.
        """
        answer, feedback = clip(answer), clip(feedback)
        key = fence_key(prompt, answer, feedback)
        user = self.refine_user.safe_substitute(prompt=prompt, answer=answer, feedback=feedback, key=key)
        return self.refine_system, user


def load_prompts(version: str = DEFAULT_VERSION) -> PromptSet:
    """Load a template version shipped with the package."""
    base = resources.files("services.orchestrator") / "prompts" / version

    def read(name: str) -> str:
        return (base / name).read_text(encoding="utf-8").strip()

    return PromptSet(
        version=version,
        answer_system=read("answer_system.txt"),
        critique_system=read("critique_system.txt"),
        critique_user=Template(read("critique_user.txt")),
        refine_system=read("refine_system.txt"),
        refine_user=Template(read("refine_user.txt")),
        critique_schema=json.loads(read("critique.schema.json")),
    )
