"""Helpers shared by the providers tests: request builders, a stream collector, an observable backend."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import Message

from orchestratex.config import Settings
from orchestratex.domains import DOMAINS
from orchestratex.v1 import common_pb2, providers_pb2, providers_pb2_grpc
from services.providers.backend import GenerationRequest, StreamEvent, Timing
from services.providers.catalogue import ModelSpec
from services.providers.simulator import Simulator

ONE_ATTEMPT_NO_BREAKER = {
    "ORX_PROVIDER_MAX_ATTEMPTS": "1",
    "ORX_PROVIDER_BREAKER_THRESHOLD": "1000",
    "ORX_PROVIDER_AUTH_COOLDOWN": "0",
}
"""Settings variables of the servers these tests build: one attempt, never an open circuit, never a provider held
for a rejected key, so each test sees the fault it scripts. Retries, the breaker and holds are tested on their own
(test_resilience*.py) and through the server with an explicit ``resilience=`` (test_resilience_server.py)."""


class ObservedBackend:
    """Wraps a backend and records whether its streams started, completed, or stopped early."""

    def __init__(self, inner: Simulator) -> None:
        self.inner = inner
        self.calls = 0
        self.started = asyncio.Event()
        self.stopped = asyncio.Event()
        self.completed = False

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def simulated(self) -> bool:
        return self.inner.simulated

    def timing(self, model: ModelSpec) -> Timing:
        return self.inner.timing(model)

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[StreamEvent, None]:
        self.calls += 1
        self.started.set()
        try:
            async for event in self.inner.stream(request):
                yield event
            self.completed = True
        finally:
            self.stopped.set()


@dataclass
class Providers:
    """A running providers server and what tests need to talk to and observe it."""

    stub: providers_pb2_grpc.ProviderServiceStub
    simulator: Simulator
    backend: ObservedBackend
    settings: Settings
    port: int


def user(text: str) -> common_pb2.ChatMessage:
    """A user message."""
    return common_pb2.ChatMessage(role=common_pb2.ROLE_USER, content=text)


def request(
    model: str = "z-ai/glm-4.5",
    text: str = "Explain how a hash map handles collisions.",
    purpose: Any = common_pb2.CALL_PURPOSE_ANSWER,
    domain: Any = common_pb2.DOMAIN_CODING,
    **fields: Any,
) -> providers_pb2.GenerateRequest:
    """A valid GenerateRequest; ``fields`` override any field."""
    msg = providers_pb2.GenerateRequest(
        model=model,
        messages=[user(text)],
        max_tokens=2000,
        context=providers_pb2.CallContext(purpose=purpose, domain=domain, session_id=uuid.uuid4().hex),
    )
    for key, value in fields.items():
        if isinstance(value, list):
            del getattr(msg, key)[:]
            getattr(msg, key).extend(value)
        elif isinstance(value, Message):
            getattr(msg, key).CopyFrom(value)
        else:
            setattr(msg, key, value)
    return msg


async def collect(
    stub: providers_pb2_grpc.ProviderServiceStub, req: providers_pb2.GenerateRequest
) -> tuple[list[providers_pb2.StreamGenerateResponse], grpc.aio.AioRpcError | None]:
    """All events of a StreamGenerate call, and the error it ended with (None on success)."""
    events: list[providers_pb2.StreamGenerateResponse] = []
    try:
        async for event in stub.StreamGenerate(providers_pb2.StreamGenerateRequest(request=req), timeout=30):
            events.append(event)
    except grpc.aio.AioRpcError as err:
        return events, err
    return events, None


def catalogue_text(base_url: str, provider_options: str = "", model_options: str = "") -> str:
    """A catalogue of one model, ``acme/tiny``, served by provider ``local`` at ``base_url`` (key in ``LOCAL_KEY``),
    with extra TOML lines for the provider and the model."""
    specialties = "\n".join(f'specialties.{d} = {{ score = 0.5, reason = "Because." }}' for d in DOMAINS)
    return f"""
[[providers]]
name = "local"
base_url = "{base_url}"
api_key_env = "LOCAL_KEY"
{provider_options}

[[models]]
id = "acme/tiny"
display_name = "Tiny"
family = "acme"
provider = "local"
context_length = 8192
max_output_tokens = 1024
input_price_per_mtok = 0.0
output_price_per_mtok = 0.0
supports_json_mode = true
{model_options}
typical_ttft_ms = 10
typical_tokens_per_second = 100
{specialties}
"""
