"""Token usage shared by every service: the one rough token estimate, and the one usage trailer.

The estimate stands in wherever no tokenizer is at hand (the selector's cost ranking, the simulator, a
call cut short before the vendor reported its usage). :data:`USAGE_TRAILER` is how a failed provider call
reports what it spent, since a failed RPC has no response message to carry it.
"""

from __future__ import annotations

import math

USAGE_TRAILER = "orx-usage-bin"
"""Trailing metadata key on a failed ``Generate`` / ``StreamGenerate``: the serialised
``orchestratex.v1.Usage`` the call spent (binary, hence the ``-bin`` suffix)."""

CHARS_PER_TOKEN = 4
"""Characters per token for the estimate. Crude, but vendor tokenisers differ anyway and the estimate only
feeds cost ranking, a safety margin on context windows and the usage of calls the vendor never reported."""


def estimate_tokens(text: str) -> int:
    """Estimated tokens of ``text``: ``ceil(chars / 4)``."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)
