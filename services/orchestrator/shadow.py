"""Shadow evaluation: which sessions are sampled, and which runner-ups answer alongside the primary.

On a sampled session the runner-up candidates also answer round 1 and the same critics score them,
so analytics can tell how often the selector's primary really was the best model for the prompt
(``GetSelectionAccuracy``). Runner-ups are the next-ranked candidates that are neither the primary
nor one of the round's critics, so no critic ever scores its own answer and every answer is judged
by the same panel.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

#: How many runner-ups answer in shadow at most (each costs one answer and one critique per critic).
MAX_RUNNERS_UP = 2
#: How long a session whose own loop has ended waits for its shadow calls before cancelling them.
GRACE_S = 30.0
#: Default sample rate when models are simulated (free) and ORX_SHADOW_SAMPLE_RATE is not set.
SIMULATED_RATE = 0.25


def sample_rate(configured: float | None, simulated: bool) -> float:
    """The share of sessions to sample: the configured rate, else on in simulation and off live."""
    if configured is not None:
        return configured
    return SIMULATED_RATE if simulated else 0.0


def sampled(session_id: str, rate: float) -> bool:
    """Whether this session is sampled: a stable function of its id, so a replay decides the same."""
    if rate <= 0.0:
        return False
    if rate >= 1.0:
        return True
    digest = hashlib.sha256(session_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


def runners_up(ranked: Sequence[str], primary: str, critics: Sequence[str], limit: int = MAX_RUNNERS_UP) -> list[str]:
    """The next-ranked models after the primary that are not critics, at most ``limit``."""
    excluded = {primary, *critics}
    return [model for model in ranked if model not in excluded][:limit]
