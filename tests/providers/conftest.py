"""Fixtures for the providers service: settings, profiles, a real server on port 0, an observable backend."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from orchestratex.config import Settings
from orchestratex.grpc_client import open_channel
from orchestratex.v1 import providers_pb2_grpc
from services.providers.catalogue import Catalogue, load_catalogue
from services.providers.server import build
from services.providers.simulator import Simulator
from tests.providers.helpers import ONE_ATTEMPT_NO_BREAKER, ObservedBackend, Providers

# Tests run the simulator 1000x faster than real time (the maximum ORX_SIM_SPEED accepts).
SPEED = "1000"


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings for a test (one attempt, no breaker: :data:`ONE_ATTEMPT_NO_BREAKER`); keyword arguments are extra
    environment variables."""

    def make(**env: str) -> Settings:
        base = {
            "ORX_DATA_DIR": str(tmp_path),
            "ORX_SIM_SPEED": SPEED,
            "ORX_PROVIDER_MODE": "simulated",
            **ONE_ATTEMPT_NO_BREAKER,
        }
        base.update(env)
        return Settings.from_env(base)

    return make


@pytest.fixture
def write_file(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write ``text`` to a uniquely named file with ``suffix``; returns its path."""

    def write(text: str, suffix: str = ".toml") -> Path:
        path = tmp_path / f"{uuid.uuid4().hex}{suffix}"
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def catalogue(make_settings: Callable[..., Settings]) -> Catalogue:
    """The packaged catalogue."""
    return load_catalogue(make_settings())


@pytest.fixture
async def start_providers(
    make_settings: Callable[..., Settings], write_file: Callable[[str, str], Path]
) -> AsyncIterator[Callable[..., Any]]:
    """Start a providers server (optionally with a simulator profile given as TOML text)."""
    async with AsyncExitStack() as stack:

        async def start(profile: str | None = None, **env: str) -> Providers:
            if profile is not None:
                env["ORX_SIM_PROFILE"] = str(write_file(profile, ".toml"))
            settings = make_settings(**env)
            simulator = Simulator.from_settings(settings, load_catalogue(settings))
            backend = ObservedBackend(simulator)
            srv = await build(settings, "127.0.0.1:0", backend=backend)
            await srv.start()
            stack.push_async_callback(srv.stop, 0)
            channel = open_channel(f"127.0.0.1:{srv.port}", unary_timeout=30)
            stack.push_async_callback(channel.close, None)
            stub = providers_pb2_grpc.ProviderServiceStub(channel)
            return Providers(stub, simulator, backend, settings, srv.port)

        yield start


@pytest.fixture
async def providers(start_providers: Callable[..., Any]) -> Providers:
    """A server with the packaged (failure-free) profile."""
    result: Providers = await start_providers()
    return result
