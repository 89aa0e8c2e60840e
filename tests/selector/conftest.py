"""Shared catalogue, a fake ProviderService on its own port-0 server, and a real selector wired to it."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, cast

import grpc
import pytest

from orchestratex.config import Settings
from orchestratex.domains import DOMAINS, to_proto
from orchestratex.grpc_server import GrpcServer
from orchestratex.v1 import common_pb2, providers_pb2, providers_pb2_grpc, selector_pb2_grpc
from services.selector.analysis import PromptAnalysis, default_output_tokens
from services.selector.ranking import Circuit, ModelEntry
from services.selector.server import build


def entry(
    model_id: str,
    family: str,
    *,
    context: int = 128_000,
    input_price: float = 1.0,
    output_price: float = 2.0,
    specialties: Mapping[str, float] | None = None,
    base: float = 0.6,
    ttft: float = 1.0,
    tps: float = 50.0,
    circuit: Circuit = Circuit.CLOSED,
    cooldown: float = 0.0,
) -> ModelEntry:
    """A catalogue entry; domains not in ``specialties`` score ``base``."""
    scores = {d: base for d in DOMAINS} | dict(specialties or {})
    return ModelEntry(
        id=model_id,
        family=family,
        context_length=context,
        input_price_per_mtok=input_price,
        output_price_per_mtok=output_price,
        specialties=scores,
        typical_ttft_s=ttft,
        tokens_per_second=tps,
        circuit=circuit,
        cooldown_remaining_s=cooldown,
    )


def catalogue() -> list[ModelEntry]:
    """Five models of four families with clear strengths, prices and speeds."""
    return [
        entry(
            "acme/coder-pro",
            "acme",
            context=200_000,
            input_price=3.0,
            output_price=15.0,
            specialties={"coding": 0.95, "math": 0.8},
            base=0.75,
            ttft=1.5,
            tps=60,
        ),
        entry(
            "acme/mini",
            "acme",
            context=32_000,
            input_price=0.1,
            output_price=0.4,
            specialties={"coding": 0.8},
            base=0.6,
            ttft=0.4,
            tps=150,
        ),
        entry(
            "bolt/think",
            "bolt",
            input_price=1.0,
            output_price=4.0,
            specialties={"math": 0.95, "reasoning": 0.95, "coding": 0.85},
            base=0.7,
            ttft=3.0,
            tps=40,
        ),
        entry(
            "cedar/writer",
            "cedar",
            context=64_000,
            input_price=0.5,
            output_price=1.5,
            specialties={"creative": 0.95, "summarization": 0.9, "coding": 0.55},
            base=0.65,
            ttft=0.8,
            tps=90,
        ),
        entry("dune/small", "dune", context=8_000, input_price=0.05, output_price=0.1, base=0.5, ttft=0.3, tps=200),
    ]


def analysis_for(
    domain: str,
    *,
    prompt_tokens: int = 1_000,
    output_tokens: int = 0,
    context_tokens: int = 0,
    probabilities: Mapping[str, float] | None = None,
) -> PromptAnalysis:
    """An analysis certain of ``domain`` (or with the given probabilities)."""
    probs = dict(probabilities) if probabilities else {d: 1.0 if d == domain else 0.0 for d in DOMAINS}
    probs = {d: probs.get(d, 0.0) for d in DOMAINS}
    return PromptAnalysis(
        probabilities=probs,
        primary_domain=domain,
        confidence=probs[domain],
        estimated_prompt_tokens=prompt_tokens,
        needs_long_context=False,
        models_too_small=(),
        language="en",
        has_code=False,
        has_data=False,
        classifier_version="test",
        context_tokens=context_tokens,
        expected_output_tokens=output_tokens or default_output_tokens(domain),
    )


_CIRCUIT_PROTO = {
    Circuit.CLOSED: common_pb2.CIRCUIT_STATE_CLOSED,
    Circuit.OPEN: common_pb2.CIRCUIT_STATE_OPEN,
    Circuit.HALF_OPEN: common_pb2.CIRCUIT_STATE_HALF_OPEN,
    Circuit.UNKNOWN: common_pb2.CIRCUIT_STATE_UNSPECIFIED,
}


def model_info(model: ModelEntry) -> common_pb2.ModelInfo:
    """The ``ModelInfo`` the providers service would send for ``model``."""
    info = common_pb2.ModelInfo(
        id=model.id,
        display_name=model.id,
        family=model.family,
        provider="fake",
        context_length=model.context_length,
        max_output_tokens=8192,
        input_price_per_mtok=model.input_price_per_mtok,
        output_price_per_mtok=model.output_price_per_mtok,
        specialties=[
            common_pb2.DomainScore(domain=cast("common_pb2.Domain", to_proto(d)), score=s, reason="test")
            for d, s in model.specialties.items()
        ],
        simulated=True,
        health=common_pb2.ModelHealth(circuit_state=_CIRCUIT_PROTO[model.circuit]),
        typical_tokens_per_second=model.tokens_per_second,
    )
    info.typical_ttft.FromMilliseconds(round(model.typical_ttft_s * 1000))
    info.health.cooldown_remaining.FromMilliseconds(round(model.cooldown_remaining_s * 1000))
    return info


class FakeProviders(providers_pb2_grpc.ProviderServiceServicer):
    """Serves ``models`` from ListModels. ``fail`` makes it answer with that status; while ``gate`` is
    set and not open, calls wait on it."""

    def __init__(self, models: Iterable[ModelEntry]) -> None:
        self.models = list(models)
        self.fail: grpc.StatusCode | None = None
        self.gate: asyncio.Event | None = None
        self.requests: list[providers_pb2.ListModelsRequest] = []
        self.called = asyncio.Event()
        # Generate (the selector's second opinion): reply text, failure, and a gate to hold calls.
        self.generate_text = '{"domain": "math"}'
        self.generate_fail: grpc.StatusCode | None = None
        self.generate_gate: asyncio.Event | None = None
        self.generate_requests: list[providers_pb2.GenerateRequest] = []

    async def Generate(self, request: providers_pb2.GenerateRequest, context: Any) -> Any:
        self.generate_requests.append(request)
        if self.generate_gate is not None:
            await self.generate_gate.wait()
        if self.generate_fail is not None:
            await context.abort(self.generate_fail, "fake providers failure")
        return providers_pb2.GenerateResponse(
            text=self.generate_text,
            served_model=request.model,
            requested_model=request.model,
            finish_reason=providers_pb2.FINISH_REASON_STOP,
            usage=common_pb2.Usage(prompt_tokens=180, completion_tokens=8, total_tokens=188, cost_usd=0.0000102),
            simulated=True,
        )

    async def ListModels(self, request: providers_pb2.ListModelsRequest, context: Any) -> Any:
        self.requests.append(request)
        self.called.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            await context.abort(self.fail, "fake providers failure")
        return providers_pb2.ListModelsResponse(models=[model_info(m) for m in self.models], simulated=True)


async def start_fake(fake: FakeProviders, address: str = "127.0.0.1:0") -> tuple[grpc.aio.Server, int]:
    """Serve ``fake`` on ``address``; returns the server and its port."""
    server = grpc.aio.server()
    providers_pb2_grpc.add_ProviderServiceServicer_to_server(fake, server)
    port = server.add_insecure_port(address)
    await server.start()
    return server, port


async def eventually(condition: Callable[[], Any], within: float = 10.0, interval: float = 0.02) -> None:
    """Poll ``condition`` (sync or async) until it is truthy; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(interval)


def make_settings(tmp_path: Path, providers_port: int, **env: str) -> Settings:
    """Settings pointing the selector at ``providers_port`` (short RPC timeout for tests)."""
    values = {
        "ORX_DATA_DIR": str(tmp_path),
        "ORX_PROVIDERS_ADDR": f"127.0.0.1:{providers_port}",
        "ORX_RPC_TIMEOUT": "3",
        # Deterministic ranking on priors unless a test turns learning on (tests/selector/test_history.py).
        "ORX_EXPLORATION": "0",
        "ORX_SELECTOR_HISTORY": "off",
    }
    return Settings.from_env(values | env)


@pytest.fixture
async def fake_providers() -> AsyncIterator[tuple[FakeProviders, int]]:
    """A fake providers service with :func:`catalogue`, and its port."""
    fake = FakeProviders(catalogue())
    server, port = await start_fake(fake)
    yield fake, port
    await server.stop(0)


StartSelector = Callable[..., Awaitable[tuple[selector_pb2_grpc.SelectorServiceStub, GrpcServer]]]


@pytest.fixture
async def start_selector(tmp_path: Path) -> AsyncIterator[StartSelector]:
    """Factory: ``await start_selector(providers_port, refresh=0.05, build_options=None, **env)`` -> (stub, server).

    Everything it starts is stopped at teardown.
    """
    servers: list[GrpcServer] = []
    channels: list[grpc.aio.Channel] = []

    async def start(
        providers_port: int, refresh: float = 0.05, build_options: Mapping[str, Any] | None = None, **env: str
    ) -> tuple[selector_pb2_grpc.SelectorServiceStub, GrpcServer]:
        settings = make_settings(tmp_path, providers_port, **env)
        srv = await build(settings, "127.0.0.1:0", catalogue_refresh=refresh, **dict(build_options or {}))
        servers.append(srv)
        await srv.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}")
        channels.append(channel)
        return selector_pb2_grpc.SelectorServiceStub(channel), srv

    yield start
    for channel in channels:
        await channel.close(None)
    for srv in servers:
        await srv.stop(0)


@pytest.fixture
async def selector(
    fake_providers: tuple[FakeProviders, int], start_selector: StartSelector
) -> selector_pb2_grpc.SelectorServiceStub:
    """A started selector wired to :func:`fake_providers`."""
    stub, _ = await start_selector(fake_providers[1])
    return stub
