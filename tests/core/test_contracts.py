"""The protobuf contracts: generated code is current, buf lint passes, the public surface is intact."""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pool

from orchestratex.v1 import analytics_pb2, orchestrator_pb2, providers_pb2, selector_pb2  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
PROTOS = sorted((ROOT / "protos" / "orchestratex" / "v1").glob("*.proto"))


def test_committed_stubs_match_the_protos(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    out.mkdir()
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        "-I",
        str(ROOT / "protos"),
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *map(str, PROTOS),
    ]
    subprocess.run(cmd, check=True, capture_output=True)
    generated = sorted(p.name for p in (out / "orchestratex" / "v1").iterdir())
    committed = sorted(p.name for p in (ROOT / "orchestratex" / "v1").iterdir() if p.suffix in {".py", ".pyi"})
    assert [g for g in generated] == [c for c in committed if c != "__init__.py"]
    stale = [
        name
        for name in generated
        if not filecmp.cmp(out / "orchestratex" / "v1" / name, ROOT / "orchestratex" / "v1" / name, shallow=False)
    ]
    assert stale == [], f"run `make protos`: committed stubs differ from the protos for {stale}"


def test_buf_lint_standard_passes() -> None:
    buf = ROOT / "node_modules" / ".bin" / "buf"
    if not buf.exists():
        found = shutil.which("buf")
        assert found, "buf is not installed: run `make test` (it installs @bufbuild/buf from npm)"
        buf = Path(found)
    result = subprocess.run([str(buf), "lint"], check=False, cwd=ROOT / "protos", capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    config = (ROOT / "protos" / "buf.yaml").read_text()
    assert "- STANDARD" in config and "except:" not in config


@pytest.mark.parametrize(
    ("service", "methods"),
    [
        ("orchestratex.v1.SelectorService", {"AnalyzePrompt", "SelectModels"}),
        ("orchestratex.v1.ProviderService", {"ListModels", "Generate", "StreamGenerate"}),
        (
            "orchestratex.v1.OrchestratorService",
            {"Orchestrate", "WatchSession", "GetSession", "ListSessions", "CancelSession"},
        ),
        (
            "orchestratex.v1.AnalyticsService",
            {"GetModelPerformance", "GetCostReport", "GetSelectionAccuracy", "SubmitFeedback", "GetSatisfaction"},
        ),
    ],
)
def test_public_surface(service: str, methods: set[str]) -> None:
    desc = descriptor_pool.Default().FindServiceByName(service)
    names = {m.name for m in desc.methods}
    assert methods <= names
    streaming = {m.name for m in desc.methods if m.server_streaming}
    expected_streaming = {"StreamGenerate", "Orchestrate", "WatchSession"} & methods
    assert streaming == expected_streaming


def test_event_oneof_names() -> None:
    oneof = orchestrator_pb2.OrchestrationEvent.DESCRIPTOR.oneofs_by_name["kind"]
    assert {f.name for f in oneof.fields} == {
        "session_started",
        "model_selected",
        "response_delta",
        "response_completed",
        "critique_completed",
        "round_completed",
        "provider_fallback",
        "warning",
        "session_completed",
        "session_failed",
    }
    fields = orchestrator_pb2.OrchestrationEvent.DESCRIPTOR.fields_by_name
    assert {"session_id", "sequence", "time"} <= set(fields)
    assert "total_cost_usd" in orchestrator_pb2.SessionCompleted.DESCRIPTOR.fields_by_name
    assert "primary_domain" in selector_pb2.PromptAnalysis.DESCRIPTOR.fields_by_name
