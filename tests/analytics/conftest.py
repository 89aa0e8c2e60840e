"""Fixtures: a SQLite analytics store and a real analytics server on port 0 with a stub."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from orchestratex.config import Settings
from orchestratex.grpc_server import GrpcServer
from orchestratex.v1 import analytics_pb2_grpc
from services.analytics.server import build
from services.analytics.store.sqlite import SqliteAnalyticsStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteAnalyticsStore]:
    opened = await SqliteAnalyticsStore.open(tmp_path / "analytics.db")
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env({"ORX_DATA_DIR": str(tmp_path / "data")})


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[GrpcServer]:
    srv = await build(settings, "127.0.0.1:0")
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop(0)


@pytest.fixture
async def stub(server: GrpcServer) -> AsyncIterator[analytics_pb2_grpc.AnalyticsServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield analytics_pb2_grpc.AnalyticsServiceStub(channel)
