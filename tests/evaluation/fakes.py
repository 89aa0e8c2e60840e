"""Stand-ins for the three stubs a strategy calls, recording every request (no gRPC: strategies take stubs)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import grpc

from orchestratex.v1 import common_pb2, orchestrator_pb2, providers_pb2, selector_pb2
from services.evaluation.strategies import Services
from services.orchestrator.prompts import load_prompts

MODELS = ("lab/alpha", "lab/beta", "other/gamma")


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    """The error a real stub raises."""
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details, None)


def critique_json(score: float, weakness: str = "The final step is not checked.") -> str:
    """A critic's reply in the contract's shape."""
    return json.dumps(
        {
            "rationale": "Reviewed.",
            "strengths": ["Clear."],
            "weaknesses": [weakness],
            "suggestions": ["Check it."],
            "score": score,
        }
    )


@dataclass
class FakeProviders:
    """``Generate`` answers with ``reply(request)``; models in ``down`` fail with UNAVAILABLE."""

    reply: Callable[[providers_pb2.GenerateRequest], str]
    down: set[str] = field(default_factory=set)
    requests: list[providers_pb2.GenerateRequest] = field(default_factory=list)
    throttled: int = 0
    """The first ``throttled`` calls fail with RESOURCE_EXHAUSTED (a rate limit)."""

    async def Generate(
        self,
        request: providers_pb2.GenerateRequest,
        timeout: float,  # noqa: ASYNC109 (the stub's signature)
    ) -> providers_pb2.GenerateResponse:
        self.requests.append(request)
        if request.model in self.down:
            raise rpc_error(grpc.StatusCode.UNAVAILABLE, f"{request.model} is down")
        if self.throttled > 0:
            self.throttled -= 1
            raise rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "rate limited")
        return providers_pb2.GenerateResponse(
            text=self.reply(request),
            served_model=request.model,
            usage=common_pb2.Usage(prompt_tokens=100, completion_tokens=20, total_tokens=120, cost_usd=0.001),
            simulated=True,
        )

    def of(self, purpose: common_pb2.CallPurpose) -> list[providers_pb2.GenerateRequest]:
        """The requests made for one purpose, in order."""
        return [r for r in self.requests if r.context.purpose == purpose]


@dataclass
class FakeSelector:
    """Picks ``MODELS[0]`` and ranks ``MODELS`` in order; every prompt is about math."""

    requests: list[selector_pb2.SelectModelsRequest] = field(default_factory=list)
    analysed: list[str] = field(default_factory=list)

    async def AnalyzePrompt(
        self,
        request: selector_pb2.AnalyzePromptRequest,
        timeout: float,  # noqa: ASYNC109 (the stub's signature)
    ) -> selector_pb2.AnalyzePromptResponse:
        self.analysed.append(request.prompt)
        return selector_pb2.AnalyzePromptResponse(
            analysis=selector_pb2.PromptAnalysis(primary_domain=common_pb2.DOMAIN_MATH)
        )

    async def SelectModels(
        self,
        request: selector_pb2.SelectModelsRequest,
        timeout: float,  # noqa: ASYNC109 (the stub's signature)
    ) -> selector_pb2.SelectModelsResponse:
        self.requests.append(request)
        return selector_pb2.SelectModelsResponse(
            primary_model=MODELS[0],
            candidates=[selector_pb2.Candidate(model=m, rank=i + 1) for i, m in enumerate(MODELS)],
        )


@dataclass
class FakeOrchestrator:
    """``Orchestrate`` streams ``events`` (built per request by ``script``)."""

    script: Callable[[orchestrator_pb2.OrchestrateRequest], Sequence[orchestrator_pb2.OrchestrationEvent]]
    requests: list[orchestrator_pb2.OrchestrateRequest] = field(default_factory=list)

    def Orchestrate(
        self, request: orchestrator_pb2.OrchestrateRequest, timeout: float
    ) -> AsyncIterator[orchestrator_pb2.OrchestrateResponse]:
        self.requests.append(request)
        events = self.script(request)

        async def stream() -> AsyncIterator[orchestrator_pb2.OrchestrateResponse]:
            for event in events:
                yield orchestrator_pb2.OrchestrateResponse(event=event)

        return stream()


def services(
    reply: Callable[[providers_pb2.GenerateRequest], str],
    *,
    down: set[str] | None = None,
    script: Callable[
        [orchestrator_pb2.OrchestrateRequest], Sequence[orchestrator_pb2.OrchestrationEvent]
    ] = lambda r: (),
) -> tuple[Services, FakeProviders, FakeSelector, FakeOrchestrator]:
    """Services over the three fakes; the catalogue lists ``MODELS`` with JSON mode."""
    providers = FakeProviders(reply, down or set())
    selector = FakeSelector()
    orchestrator = FakeOrchestrator(script)
    models = {
        m: common_pb2.ModelInfo(
            id=m, input_price_per_mtok=1.0, output_price_per_mtok=2.0, supports_json_mode=True, simulated=True
        )
        for m in MODELS
    }
    # No waiting between retries here: what is tested is which errors are retried and how often.
    svc = Services(
        backoff=0.0,
        providers=providers,
        selector=selector,
        orchestrator=orchestrator,
        models=models,
        prompts=load_prompts(),
    )
    return svc, providers, selector, orchestrator
