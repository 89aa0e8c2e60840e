"""Schemathesis (the OpenAPI-driven fuzzer) against a live gateway, with every check it runs by default.

The gateway runs in this process on 127.0.0.1:0 with API keys, in front of the fake services (whose sessions
complete at once, so that event streams end); the ``schemathesis`` command runs as a subprocess and reads
``/v1/openapi.json``. Its phases: the schema's examples, the coverage phase (boundaries of every declared
constraint, and values just outside them), random fuzzing of valid and invalid requests, and the stateful phase,
which follows the document's links (start a session, then get, stream, cancel and rate it).

``ORX_SCHEMATHESIS_CASES`` (default 10) sets the examples per operation and ``ORX_SCHEMATHESIS_SEED``
the seed (default a fixed one, so a failure is reproducible; ``random`` for a new one each run). Try
``ORX_SCHEMATHESIS_CASES=500`` for a long run.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from gateway.app import start_gateway

from .conftest import Peers, make_settings
from .test_security import KEY_A, keyed_env

CASES = int(os.environ.get("ORX_SCHEMATHESIS_CASES", "10"))
SEED = os.environ.get("ORX_SCHEMATHESIS_SEED", "20261214")
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"

pytestmark = pytest.mark.timeout(max(120, CASES * 30))


async def test_schemathesis_finds_no_problem_stateless_or_stateful(tmp_path: Path, peers: Peers) -> None:
    peers.orchestrator.finish_all = True
    settings = make_settings(tmp_path, **keyed_env(peers, ORX_GATEWAY_RATE_LIMIT="0"))
    runner, port = await start_gateway(settings, "127.0.0.1", 0)
    seed = [] if SEED == "random" else ["--seed", SEED]
    try:
        proc = await asyncio.create_subprocess_exec(
            str(SCHEMATHESIS),
            "run",
            f"http://127.0.0.1:{port}/v1/openapi.json",
            "--header",
            f"Authorization: Bearer {KEY_A}",
            "--max-examples",
            str(CASES),
            *seed,
            "--workers",
            "1",
            "--request-timeout",
            "20",
            "--generation-database",
            "none",
            "--no-color",
            "--report-dir",
            str(tmp_path / "report"),
            cwd=tmp_path,
            env={**os.environ, "NO_PROXY": "*", "COLUMNS": "200"},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await proc.communicate()
    finally:
        await runner.cleanup()
    text = output.decode(errors="replace")
    print(text)  # shown with -s (or -rP): the run's summary
    assert proc.returncode == 0, text[-30_000:]
    # It really ran: every phase, and the stateful one followed the links into the session operations.
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert phase in text, text[-5000:]
    assert peers.orchestrator.orchestrate_requests, "no session was started"
