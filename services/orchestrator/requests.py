"""Validation of OrchestrateRequest and the defaults applied to it.

A session answers ``prompt`` (with a thread's earlier turns as context when ``thread_id`` is set) or
the last of ``messages``, the earlier ones being its context; never both. ``author_options`` are
checked as the providers service checks a ``GenerateRequest`` (:mod:`services.sampling`); the ceilings
that depend on the catalogue are checked once it is known (:func:`check_for_catalogue`).
"""

from __future__ import annotations

from collections.abc import Mapping

from orchestratex.errors import InvalidArgument
from orchestratex.v1 import common_pb2, providers_pb2
from orchestratex.v1 import orchestrator_pb2 as pb
from orchestratex.validation import check_enum, check_max_len, check_range, require_text
from services.orchestrator import policy
from services.sampling import check_sampling

DEFAULT_MAX_ROUNDS = 3
DEFAULT_THRESHOLD = 8.0
DEFAULT_CRITICS = 2
DEFAULT_TIME_LIMIT_S = 300.0
MAX_TIME_LIMIT_S = 3600.0
DEFAULT_EPSILON = 0.25
DEFAULT_PATIENCE = 1
MAX_CRITICS = 5
MAX_MESSAGES = 1000
"""The most messages a session's conversation may have (their total length is capped like a prompt's)."""


def normalise(request: pb.OrchestrateRequest, max_prompt_chars: int) -> tuple[pb.OrchestrateRequest, policy.StopRules]:
    """Validate ``request`` (INVALID_ARGUMENT naming the field) and return a copy with defaults filled in.

    A session from ``messages`` gets ``prompt`` filled in with the last (user) message's text: that is
    what it answers, what the selector analyses and what session lists show.
    """
    out = pb.OrchestrateRequest()
    out.CopyFrom(request)
    if request.messages:
        _check_messages(request, max_prompt_chars)
        out.prompt = request.messages[-1].content
    elif not request.prompt.strip():
        raise InvalidArgument("prompt", "is required and must not be blank (or send the conversation in messages)")
    else:
        require_text(request.prompt, "prompt", max_prompt_chars)
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
    options = out.author_options
    if options.max_tokens < 0:
        raise InvalidArgument(
            "author_options.max_tokens", f"must be >= 0 (0 means the default), got {options.max_tokens}"
        )
    check_sampling(options, "author_options.")
    rules = policy.StopRules(
        threshold=out.quality_threshold,
        max_rounds=out.max_rounds,
        epsilon=out.plateau_epsilon,
        patience=out.patience,
        budget_usd=out.budget_usd if out.HasField("budget_usd") else None,
        time_limit_s=out.time_limit.ToNanoseconds() / 1e9,
    )
    return out, rules


def _check_messages(request: pb.OrchestrateRequest, max_prompt_chars: int) -> None:
    """The conversation: known roles, no blank message, the user's last, within the prompt limit."""
    if request.prompt:
        raise InvalidArgument("prompt", "must be empty when messages is set (the last user message is the prompt)")
    if request.thread_id:
        raise InvalidArgument(
            "thread_id", "must be empty when messages is set (the messages are the whole conversation)"
        )
    count = len(request.messages)
    if count > MAX_MESSAGES:
        raise InvalidArgument("messages", f"has {count:,} messages; the limit is {MAX_MESSAGES:,}")
    for i, message in enumerate(request.messages):
        check_enum(message.role, common_pb2.Role.DESCRIPTOR, f"messages[{i}].role", allow_unspecified=False)
        require_text(message.content, f"messages[{i}].content", max_prompt_chars)
    last = request.messages[-1]
    if last.role != common_pb2.ROLE_USER:
        raise InvalidArgument(
            f"messages[{count - 1}].role",
            f"the last message must be the user's (ROLE_USER), got {common_pb2.Role.Name(last.role)}: "
            "it is what the session answers",
        )
    total = sum(len(m.content) for m in request.messages)
    if total > max_prompt_chars:
        raise InvalidArgument("messages", f"total {total:,} characters; the limit is {max_prompt_chars:,}")


def check_for_catalogue(req: pb.OrchestrateRequest, models: Mapping[str, common_pb2.ModelInfo]) -> None:
    """The author options against what the models can do (nothing is checked while the catalogue is
    unknown): ``max_tokens`` within the largest output ceiling, the pinned model's when one is pinned;
    and a pinned model that follows a JSON Schema when one is asked for."""
    options = req.author_options
    pinned = models.get(req.preferences.pinned_model)
    pool = [pinned] if pinned is not None else list(models.values())
    ceilings = [m.max_output_tokens for m in pool]
    if options.max_tokens and ceilings and min(ceilings) > 0 and options.max_tokens > max(ceilings):
        whose = pinned.id if pinned is not None else "the most generous model of the catalogue"
        raise InvalidArgument(
            "author_options.max_tokens", f"is {options.max_tokens:,}; {whose} allows at most {max(ceilings):,}"
        )
    schema = options.response_format.type == providers_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA
    if schema and pinned is not None and not pinned.supports_structured_outputs:
        raise InvalidArgument(
            "author_options.response_format.type",
            f"the pinned model {pinned.id} does not support structured outputs "
            "(ModelInfo.supports_structured_outputs is false); ask for RESPONSE_FORMAT_TYPE_JSON_OBJECT or plain text",
        )
