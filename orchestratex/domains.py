"""The nine prompt domains, as names and as the ``Domain`` proto enum."""

from __future__ import annotations

from orchestratex.v1 import common_pb2

DOMAINS: tuple[str, ...] = (
    "coding",
    "math",
    "reasoning",
    "creative",
    "factual",
    "summarization",
    "extraction",
    "classification",
    "brainstorming",
)


def to_proto(name: str) -> int:
    """``"coding"`` -> ``DOMAIN_CODING``."""
    return int(common_pb2.Domain.Value("DOMAIN_" + name.upper()))


def from_proto(value: int) -> str:
    """``DOMAIN_CODING`` -> ``"coding"``; ``""`` for unspecified."""
    if value == 0:
        return ""
    return str(common_pb2.Domain.Name(value))[len("DOMAIN_") :].lower()
