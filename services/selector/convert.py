"""Conversions between the selector's domain objects and ``orchestratex.v1`` messages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from orchestratex import domains
from orchestratex.v1 import common_pb2, selector_pb2
from services.selector.analysis import PromptAnalysis
from services.selector.ranking import Preferences, Selection
from services.selector.second_opinion import Opinion

#: Name -> enum value, looked up once (``to_proto`` goes through the descriptor on every call).
_DOMAIN_VALUES = {name: cast("common_pb2.Domain", domains.to_proto(name)) for name in domains.DOMAINS}


def _domain(name: str) -> common_pb2.Domain:
    value = _DOMAIN_VALUES.get(name)
    return value if value is not None else cast("common_pb2.Domain", domains.to_proto(name))


def preferences_from_proto(message: common_pb2.Preferences) -> Preferences:
    """``Preferences`` message -> :class:`Preferences` (unset optional fields become ``None``)."""
    return Preferences(
        quality_weight=message.quality_weight if message.HasField("quality_weight") else None,
        cost_weight=message.cost_weight if message.HasField("cost_weight") else None,
        latency_weight=message.latency_weight if message.HasField("latency_weight") else None,
        max_cost_usd=message.max_cost_usd if message.HasField("max_cost_usd") else None,
        allowed_models=tuple(message.allowed_models),
        excluded_models=tuple(message.excluded_models),
        pinned_model=message.pinned_model,
    )


def opinion_to_proto(opinion: Opinion) -> selector_pb2.SecondOpinion:
    """:class:`Opinion` -> ``SecondOpinion`` message."""
    message = selector_pb2.SecondOpinion(
        model=opinion.model,
        domain=_domain(opinion.domain) if opinion.domain else common_pb2.DOMAIN_UNSPECIFIED,
        applied=opinion.applied,
        classifier_domain=_domain(opinion.classifier_domain),
        classifier_confidence=opinion.classifier_confidence,
        usage=opinion.usage,
    )
    message.latency.FromNanoseconds(round(opinion.latency_s * 1e9))
    return message


def analysis_to_proto(analysis: PromptAnalysis, opinion: Opinion | None = None) -> selector_pb2.PromptAnalysis:
    """:class:`PromptAnalysis` (and the second opinion, if one was asked for) -> ``PromptAnalysis`` message."""
    return selector_pb2.PromptAnalysis(**_analysis_fields(analysis, opinion))


# The response is built from nested dicts, not nested messages: upb copies a message passed as a
# field value, while it fills a dict straight into the parent (half the time for a whole response).
def _analysis_fields(analysis: PromptAnalysis, opinion: Opinion | None) -> dict[str, Any]:
    reasons = analysis.reasons
    known = _DOMAIN_VALUES.get  # the nine names; _domain() for anything else (values are never 0)
    fields: dict[str, Any] = {
        "domain_probabilities": [
            {"domain": known(name) or _domain(name), "score": p, "reason": reasons.get(name, "")}
            for name, p in analysis.probabilities.items()
        ],
        "primary_domain": _domain(analysis.primary_domain),
        "confidence": analysis.confidence,
        "estimated_prompt_tokens": analysis.estimated_prompt_tokens,
        "needs_long_context": analysis.needs_long_context,
        "models_too_small": analysis.models_too_small,
        "language": analysis.language,
        "has_code": analysis.has_code,
        "has_data": analysis.has_data,
        "classifier_version": analysis.classifier_version,
    }
    if opinion is not None:
        fields["second_opinion"] = opinion_to_proto(opinion)
    return fields


def selection_to_proto(
    selection: Selection, extra_warnings: Sequence[str] = (), opinion: Opinion | None = None
) -> selector_pb2.SelectModelsResponse:
    """:class:`Selection` -> ``SelectModelsResponse``; ``extra_warnings`` come first."""
    return selector_pb2.SelectModelsResponse(
        analysis=_analysis_fields(selection.analysis, opinion),
        candidates=[
            {
                "model": c.model,
                "score": c.score,
                "breakdown": {
                    "specialty": b.specialty,
                    "history": b.history,
                    "cost": b.cost,
                    "latency": b.latency,
                    "exploration": b.exploration,
                },
                "reason": c.reason,
                "estimated_cost_usd": c.estimated_cost_usd,
                "rank": c.rank,
                "family": c.family,
            }
            for c in selection.candidates
            for b in (c.breakdown,)  # binds the breakdown once per candidate
        ],
        primary_model=selection.primary_model,
        critic_models=selection.critic_models,
        dropped=[{"model": d.model, "reason": d.reason} for d in selection.dropped],
        warnings=[*extra_warnings, *selection.warnings],
    )
