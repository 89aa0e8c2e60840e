"""Versioned prompt templates (``prompts/<version>/*.txt``), filled with ``string.Template``.

Templates live in files, not in code, so they can be reviewed and changed (as a new version) without
touching the loop. ``$prompt``, ``$answer`` and ``$feedback`` are substituted; user text is never
interpreted as a template.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from string import Template
from typing import Any

DEFAULT_VERSION = "v1"


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

    def critique(self, prompt: str, answer: str) -> tuple[str, str]:
        """System and user messages asking a critic to review ``answer``, without naming its author."""
        return self.critique_system, self.critique_user.safe_substitute(prompt=prompt, answer=answer)

    def refine(self, prompt: str, answer: str, feedback: str) -> tuple[str, str]:
        """System and user messages asking the author to improve ``answer`` from ``feedback``."""
        return self.refine_system, self.refine_user.safe_substitute(prompt=prompt, answer=answer, feedback=feedback)


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
