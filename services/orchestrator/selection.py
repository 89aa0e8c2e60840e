"""Choosing a session's models: the selector's ranking, or the catalogue's own when the selector is down.

:func:`select` asks the selector, with its own short deadline. A request the selector rejects is the
client's error and is raised as such; any other failure falls back to :func:`catalogue_ranking`: the
eligible models by mean specialty, the others as critics (other families first), and a
``SELECTOR_UNAVAILABLE`` warning for the session to emit. A session that asks its author for a JSON
Schema is authored by the best-ranked model that follows one (:func:`structured_author`).
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from orchestratex.errors import FailedPrecondition, Unavailable, from_rpc_error
from orchestratex.usage import estimate_tokens
from orchestratex.v1 import common_pb2, selector_pb2, selector_pb2_grpc
from orchestratex.v1 import orchestrator_pb2 as pb

SELECT_TIMEOUT = 5.0


@dataclass
class Selection:
    """The outcome of model selection."""

    primary: str
    critics: list[str]
    candidates: list[selector_pb2.Candidate]
    analysis: selector_pb2.PromptAnalysis
    from_defaults: bool = False
    warnings: list[str] = field(default_factory=list)


async def select(
    selector: selector_pb2_grpc.SelectorServiceStub,
    req: pb.OrchestrateRequest,
    models: dict[str, common_pb2.ModelInfo],
    context_tokens: int,
) -> Selection:
    """The selector's choice for ``req``; the catalogue's ranking when the selector cannot be reached."""
    try:
        resp = await selector.SelectModels(
            selector_pb2.SelectModelsRequest(
                prompt=req.prompt,
                preferences=req.preferences,
                critic_count=req.critic_count,
                context_tokens=context_tokens,
            ),
            timeout=SELECT_TIMEOUT,
        )
    except grpc.aio.AioRpcError as err:
        if err.code() in (
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.FAILED_PRECONDITION,
            grpc.StatusCode.NOT_FOUND,
        ):
            raise from_rpc_error(err, "selector") from None
        return catalogue_ranking(req, models, f"selector unavailable ({err.code().name}); using catalogue defaults")
    return Selection(
        primary=resp.primary_model,
        critics=list(resp.critic_models),
        candidates=list(resp.candidates),
        analysis=resp.analysis,
    )


def catalogue_ranking(req: pb.OrchestrateRequest, models: dict[str, common_pb2.ModelInfo], why: str) -> Selection:
    """Selection without the selector: catalogue order by mean specialty, other families as critics."""
    if not models:
        raise Unavailable("no model catalogue: both the selector and the providers service are unreachable")
    prefs = req.preferences
    allowed = set(prefs.allowed_models)
    eligible = [
        m
        for m in models.values()
        if (not allowed or m.id in allowed)
        and m.id not in prefs.excluded_models
        and m.health.circuit_state != common_pb2.CIRCUIT_STATE_OPEN
    ]
    if not eligible:
        raise FailedPrecondition("no eligible model: every model is excluded, not allowed or unhealthy")

    def mean_specialty(m: common_pb2.ModelInfo) -> float:
        return statistics.fmean(s.score for s in m.specialties) if m.specialties else 0.0

    eligible.sort(key=lambda m: (-mean_specialty(m), m.id))
    if prefs.pinned_model:
        pinned = [m for m in eligible if m.id == prefs.pinned_model]
        if not pinned:
            raise FailedPrecondition(f"pinned model {prefs.pinned_model} is not eligible")
        eligible = pinned + [m for m in eligible if m.id != prefs.pinned_model]
    primary = eligible[0]
    others = sorted(eligible[1:], key=lambda m: m.family == primary.family)
    candidates = [
        selector_pb2.Candidate(
            model=m.id,
            score=mean_specialty(m),
            rank=i + 1,
            family=m.family,
            reason=f"Catalogue default (selector unavailable): mean specialty {mean_specialty(m):.2f}.",
        )
        for i, m in enumerate(eligible)
    ]
    analysis = selector_pb2.PromptAnalysis(estimated_prompt_tokens=estimate_tokens(req.prompt))
    return Selection(
        primary=primary.id,
        critics=[m.id for m in others],
        candidates=candidates,
        analysis=analysis,
        from_defaults=True,
        warnings=[why],
    )


def structured_author(selection: Selection, capable: Callable[[str], bool]) -> Selection:
    """``selection`` with an author that follows a JSON Schema: its primary when it does, else the
    best-ranked candidate that does (FAILED_PRECONDITION when none does)."""
    if capable(selection.primary):
        return selection
    for candidate in selection.candidates:
        if capable(candidate.model):
            return dataclasses.replace(selection, primary=candidate.model)
    field = "author_options.response_format.type"
    raise FailedPrecondition(
        f"{field}: no eligible model supports structured outputs (ModelInfo.supports_structured_outputs); "
        "ask for RESPONSE_FORMAT_TYPE_JSON_OBJECT or plain text",
        field=field,
    )
