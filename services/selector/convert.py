"""Conversions between the selector's domain objects and ``orchestratex.v1`` messages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from orchestratex import domains
from orchestratex.v1 import common_pb2, selector_pb2
from services.selector.analysis import PromptAnalysis
from services.selector.ranking import Preferences, Selection


def _domain(name: str) -> common_pb2.Domain:
    return cast("common_pb2.Domain", domains.to_proto(name))


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


def analysis_to_proto(analysis: PromptAnalysis) -> selector_pb2.PromptAnalysis:
    """:class:`PromptAnalysis` -> ``PromptAnalysis`` message."""
    return selector_pb2.PromptAnalysis(
        domain_probabilities=[
            common_pb2.DomainScore(domain=_domain(name), score=p, reason=analysis.reasons.get(name, ""))
            for name, p in analysis.probabilities.items()
        ],
        primary_domain=_domain(analysis.primary_domain),
        confidence=analysis.confidence,
        estimated_prompt_tokens=analysis.estimated_prompt_tokens,
        needs_long_context=analysis.needs_long_context,
        models_too_small=list(analysis.models_too_small),
        language=analysis.language,
        has_code=analysis.has_code,
        has_data=analysis.has_data,
        classifier_version=analysis.classifier_version,
    )


def selection_to_proto(selection: Selection, extra_warnings: Sequence[str] = ()) -> selector_pb2.SelectModelsResponse:
    """:class:`Selection` -> ``SelectModelsResponse``; ``extra_warnings`` come first."""
    return selector_pb2.SelectModelsResponse(
        analysis=analysis_to_proto(selection.analysis),
        candidates=[
            selector_pb2.Candidate(
                model=c.model,
                score=c.score,
                breakdown=selector_pb2.ScoreBreakdown(
                    specialty=c.breakdown.specialty,
                    history=c.breakdown.history,
                    cost=c.breakdown.cost,
                    latency=c.breakdown.latency,
                    exploration=c.breakdown.exploration,
                ),
                reason=c.reason,
                estimated_cost_usd=c.estimated_cost_usd,
                rank=c.rank,
                family=c.family,
            )
            for c in selection.candidates
        ],
        primary_model=selection.primary_model,
        critic_models=list(selection.critic_models),
        dropped=[selector_pb2.DroppedModel(model=d.model, reason=d.reason) for d in selection.dropped],
        warnings=[*extra_warnings, *selection.warnings],
    )
