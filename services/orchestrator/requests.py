"""Validation of OrchestrateRequest and the defaults applied to it."""

from __future__ import annotations

from orchestratex.errors import InvalidArgument
from orchestratex.v1 import orchestrator_pb2 as pb
from orchestratex.validation import check_max_len, check_range, require_text
from services.orchestrator import policy

DEFAULT_MAX_ROUNDS = 3
DEFAULT_THRESHOLD = 8.0
DEFAULT_CRITICS = 2
DEFAULT_TIME_LIMIT_S = 300.0
MAX_TIME_LIMIT_S = 3600.0
DEFAULT_EPSILON = 0.25
DEFAULT_PATIENCE = 1
MAX_CRITICS = 5


def normalise(request: pb.OrchestrateRequest, max_prompt_chars: int) -> tuple[pb.OrchestrateRequest, policy.StopRules]:
    """Validate ``request`` (INVALID_ARGUMENT naming the field) and return a copy with defaults filled in."""
    require_text(request.prompt, "prompt", max_prompt_chars)
    out = pb.OrchestrateRequest()
    out.CopyFrom(request)
    if not out.HasField("max_rounds"):
        out.max_rounds = DEFAULT_MAX_ROUNDS
    if not 1 <= out.max_rounds <= 10:
        raise InvalidArgument("max_rounds", f"must be between 1 and 10, got {out.max_rounds}")
    if not out.HasField("quality_threshold"):
        out.quality_threshold = DEFAULT_THRESHOLD
    check_range(out.quality_threshold, "quality_threshold", 0, 10)
    if not out.HasField("critic_count"):
        out.critic_count = DEFAULT_CRITICS
    if not 0 <= out.critic_count <= MAX_CRITICS:
        raise InvalidArgument("critic_count", f"must be between 0 and {MAX_CRITICS}, got {out.critic_count}")
    if out.critic_count == 0 and out.max_rounds > 1:
        raise InvalidArgument(
            "critic_count", f"is 0, so nothing can score a refinement; max_rounds must be 1, got {out.max_rounds}"
        )
    if out.HasField("budget_usd") and not out.budget_usd > 0:
        raise InvalidArgument("budget_usd", f"must be greater than 0 when set, got {out.budget_usd:g}")
    if out.HasField("budget_usd"):
        check_range(out.budget_usd, "budget_usd", 0, 1e6, low_open=True)
    if out.HasField("time_limit"):
        seconds = out.time_limit.ToNanoseconds() / 1e9
        if not 0 < seconds <= MAX_TIME_LIMIT_S:
            raise InvalidArgument("time_limit", f"must be between 0 and {MAX_TIME_LIMIT_S:g}s, got {seconds:g}s")
    else:
        out.time_limit.FromNanoseconds(int(DEFAULT_TIME_LIMIT_S * 1e9))
    if not out.HasField("plateau_epsilon"):
        out.plateau_epsilon = DEFAULT_EPSILON
    check_range(out.plateau_epsilon, "plateau_epsilon", 0, 10)
    if not out.HasField("patience"):
        out.patience = DEFAULT_PATIENCE
    if not 1 <= out.patience <= 10:
        raise InvalidArgument("patience", f"must be between 1 and 10, got {out.patience}")
    check_max_len(out.thread_id, "thread_id", 128)
    prefs = out.preferences
    for name in ("quality_weight", "cost_weight", "latency_weight", "max_cost_usd"):
        if prefs.HasField(name):
            check_range(getattr(prefs, name), f"preferences.{name}", 0, 1e9)
    rules = policy.StopRules(
        threshold=out.quality_threshold,
        max_rounds=out.max_rounds,
        epsilon=out.plateau_epsilon,
        patience=out.patience,
        budget_usd=out.budget_usd if out.HasField("budget_usd") else None,
        time_limit_s=out.time_limit.ToNanoseconds() / 1e9,
    )
    return out, rules
