"""SelectorService over gRPC: request validation, then analysis and ranking on the cached catalogue.

:func:`build` wires the servicer to a channel to the providers service and a background-refreshed
:class:`~services.selector.catalogue.CatalogueCache`; both are cleaned up by ``GrpcServer.stop``.
"""

from __future__ import annotations

import asyncio
import logging
import random

import grpc

from orchestratex.config import Settings
from orchestratex.grpc_client import open_channel
from orchestratex.grpc_server import GrpcServer, ServiceBinding, building
from orchestratex.v1 import analytics_pb2_grpc, providers_pb2_grpc, selector_pb2, selector_pb2_grpc
from orchestratex.validation import check_range, require_text
from services.selector.analysis import DomainClassifier, PromptAnalysis, analyze
from services.selector.catalogue import DEFAULT_REFRESH_INTERVAL, Catalogue, CatalogueCache, providers_fetcher
from services.selector.classifier import default_classifier
from services.selector.convert import analysis_to_proto, preferences_from_proto, selection_to_proto
from services.selector.history import HistoryCache, analytics_fetcher
from services.selector.learning import QualityModel
from services.selector.ranking import (
    DEFAULT_CRITICS,
    check_model_ids,
    select,
    validate_critic_count,
    validate_preferences,
)
from services.selector.second_opinion import DEFAULT_TIMEOUT as SECOND_OPINION_TIMEOUT
from services.selector.second_opinion import Opinion, SecondOpinionClient, combine, revise, should_ask

log = logging.getLogger(__name__)

SERVICE_NAME = "orchestratex.v1.SelectorService"
#: Bounds for the size hints a caller may pass (far above any real model, far below overflow).
MAX_EXPECTED_OUTPUT_TOKENS = 1_000_000
MAX_CONTEXT_TOKENS = 100_000_000
#: Reconnect quickly once the providers service is back, instead of gRPC's default backoff (up to 2 min).
_CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 250), ("grpc.max_reconnect_backoff_ms", 3000)]


class SelectorServicer(selector_pb2_grpc.SelectorServiceServicer):
    """Implements ``orchestratex.v1.SelectorService`` on a :class:`CatalogueCache` and a classifier."""

    def __init__(
        self,
        settings: Settings,
        catalogue: CatalogueCache,
        classifier: DomainClassifier,
        second_opinion: SecondOpinionClient | None = None,
    ) -> None:
        self._max_prompt_chars = settings.common.max_prompt_chars
        self._catalogue = catalogue
        self._classifier = classifier
        self._quality_model = QualityModel(exploration=settings.selector.exploration)
        self._rng = random.Random(settings.selector.seed)
        self._second_opinion = second_opinion
        self.history: HistoryCache | None = None
        """Measured performance from analytics; None ranks on catalogue priors only."""

    async def AnalyzePrompt(
        self,
        request: selector_pb2.AnalyzePromptRequest,
        context: grpc.aio.ServicerContext[selector_pb2.AnalyzePromptRequest, selector_pb2.AnalyzePromptResponse],
    ) -> selector_pb2.AnalyzePromptResponse:
        """Classify the prompt and check it against every model's context window."""
        prompt = require_text(request.prompt, "prompt", self._max_prompt_chars)
        catalogue = await self._catalogue.get()
        analysis = analyze(prompt, self._classifier, context_windows=catalogue.context_windows())
        analysis, opinion = await self._maybe_second_opinion(prompt, analysis, catalogue, 0)
        return selector_pb2.AnalyzePromptResponse(
            analysis=analysis_to_proto(analysis, opinion),
            warnings=[opinion.warning] if opinion and opinion.warning else [],
        )

    async def _maybe_second_opinion(
        self, prompt: str, analysis: PromptAnalysis, catalogue: Catalogue, expected_output_tokens: int
    ) -> tuple[PromptAnalysis, Opinion | None]:
        """Ask for a second opinion when it is enabled and the classifier is unsure; combine the answer."""
        asker = self._second_opinion
        if asker is None or not should_ask(analysis, asker.below):
            return analysis, None
        opinion = await asker.ask(prompt, analysis, catalogue.models)
        if not opinion.applied:
            return analysis, opinion
        revised = revise(
            analysis,
            combine(analysis.probabilities, opinion.domain),
            f"second opinion from {opinion.model}: {opinion.domain}",
            context_windows=catalogue.context_windows(),
            expected_output_tokens=expected_output_tokens,
        )
        return revised, opinion

    async def SelectModels(
        self,
        request: selector_pb2.SelectModelsRequest,
        context: grpc.aio.ServicerContext[selector_pb2.SelectModelsRequest, selector_pb2.SelectModelsResponse],
    ) -> selector_pb2.SelectModelsResponse:
        """Rank the catalogue for the prompt; pick the primary model and critics."""
        # Everything checkable without the catalogue first: bad requests never wait on the network.
        prompt = require_text(request.prompt, "prompt", self._max_prompt_chars)
        preferences = preferences_from_proto(request.preferences)
        validate_preferences(preferences)
        critic_count = validate_critic_count(
            request.critic_count if request.HasField("critic_count") else DEFAULT_CRITICS
        )
        check_range(request.expected_output_tokens, "expected_output_tokens", 0, MAX_EXPECTED_OUTPUT_TOKENS)
        check_range(request.context_tokens, "context_tokens", 0, MAX_CONTEXT_TOKENS)

        catalogue = await self._catalogue.get()
        check_model_ids(preferences, catalogue.ids)
        analysis = analyze(
            prompt,
            self._classifier,
            context_windows=catalogue.context_windows(),
            expected_output_tokens=request.expected_output_tokens,
            context_tokens=request.context_tokens,
        )
        analysis, opinion = await self._maybe_second_opinion(
            prompt, analysis, catalogue, request.expected_output_tokens
        )
        history = self.history.snapshot if self.history is not None else None
        selection = select(
            analysis,
            catalogue.models,
            preferences,
            critic_count=critic_count,
            history=history,
            quality_model=self._quality_model,
            rng=self._rng,
        )
        log.debug(
            "selected %s for %s (confidence %.2f): %d candidate(s), %d dropped",
            selection.primary_model,
            analysis.primary_domain,
            analysis.confidence,
            len(selection.candidates),
            len(selection.dropped),
        )
        notes: list[str | None] = [self._catalogue.staleness_warning()]
        if self.history is not None:
            notes.append(self.history.warning())
        if opinion is not None:
            notes.append(opinion.warning)
        return selection_to_proto(selection, [n for n in notes if n], opinion)


async def build(
    settings: Settings,
    listen: str | None = None,
    *,
    catalogue_refresh: float = DEFAULT_REFRESH_INTERVAL,
    classifier: DomainClassifier | None = None,
    second_opinion_timeout: float = SECOND_OPINION_TIMEOUT,
) -> GrpcServer:
    """Build the selector server (not started).

    The catalogue comes from ``settings.common.peers["providers"]``; its background refresh (every
    ``catalogue_refresh`` seconds) starts now, so the first request usually finds it loaded.
    ``classifier`` replaces the trained domain classifier (``RuleClassifier`` is the rule-only one).
    With ``settings.selector.second_opinion`` on, low-confidence prompts get a second opinion from a cheap
    model through the same providers channel, waiting at most ``second_opinion_timeout`` seconds
    (see :mod:`services.selector.second_opinion`).
    """
    common, own = settings.common, settings.selector
    async with building(
        listen or str(common.listen["selector"]), common.max_message_bytes, common.reuse_port("selector")
    ) as (srv, resources):
        # Loaded once per process (tens of ms, more if the artefact must be retrained): off the event loop.
        domain_classifier = classifier if classifier is not None else await asyncio.to_thread(default_classifier)
        channel = open_channel(
            common.peers["providers"],
            unary_timeout=common.rpc_timeout,
            max_message_bytes=common.max_message_bytes,
            options=_CHANNEL_OPTIONS,
        )
        resources.push_async_callback(channel.close, None)
        cache = CatalogueCache(
            providers_fetcher(providers_pb2_grpc.ProviderServiceStub(channel), timeout=common.rpc_timeout),
            interval=catalogue_refresh,
            first_fetch_timeout=common.rpc_timeout,
        )
        second_opinion = None
        if own.second_opinion:
            second_opinion = SecondOpinionClient(
                providers_pb2_grpc.ProviderServiceStub(channel),
                model=own.second_opinion_model,
                below=own.second_opinion_below,
                timeout=min(second_opinion_timeout, common.rpc_timeout),
            )
        servicer = SelectorServicer(settings, cache, domain_classifier, second_opinion)
        if own.use_history:
            analytics_channel = open_channel(
                common.peers["analytics"], unary_timeout=common.rpc_timeout, options=_CHANNEL_OPTIONS
            )
            resources.push_async_callback(analytics_channel.close, None)
            history = HistoryCache(
                analytics_fetcher(analytics_pb2_grpc.AnalyticsServiceStub(analytics_channel), common.rpc_timeout),
                interval=own.history_refresh,
            )
            servicer.history = history
            history.start()
            resources.push_async_callback(history.close)
        # Refreshing starts now, so the first request usually finds the catalogue loaded; it stops before
        # the channels close (the stack releases in reverse).
        cache.start()
        resources.push_async_callback(cache.close)
        srv.add(ServiceBinding(selector_pb2_grpc.add_SelectorServiceServicer_to_server, servicer, SERVICE_NAME))
    return srv
