"""``pip install orchestratex`` without extras, in a clean venv: the stubs and the client surface work, and
none of the services' dependencies came along.

The wheel is built from a copy of the tree (so the build leaves nothing in the checkout), without build
isolation when this venv has setuptools (no download); the clean venv gets its packages through this
venv's pip (``pip --python``), from pip's cache when it is warm: a few seconds.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "orchestratex", "services", "gateway")
# The services' dependencies: none of them may come with a plain `pip install orchestratex`.
SERVER_ONLY = ("aiohttp", "aiosqlite", "httpx", "jsonschema", "numpy", "orjson", "pymongo", "sklearn", "uvloop")

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(600)]

# Runs in the clean venv: the public surface and every stub import, a stub makes a real call (to a port
# where nothing listens) whose failure maps onto the library's errors, and what is importable is reported.
PROBE = """
import asyncio, importlib.util, json, sys
import grpc
import orchestratex
from orchestratex import *
from orchestratex.v1 import (
    analytics_pb2_grpc, common_pb2, orchestrator_pb2, orchestrator_pb2_grpc, providers_pb2_grpc, selector_pb2_grpc,
)

async def call() -> str:
    async with open_channel("127.0.0.1:1", unary_timeout=2.0) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        try:
            await stub.GetSession(orchestrator_pb2.GetSessionRequest(session_id="s"))
        except grpc.aio.AioRpcError as err:
            return type(from_rpc_error(err, "orchestrator")).__name__
    return "answered"

print(json.dumps({
    "exported": sorted(orchestratex.__all__),
    "file": orchestratex.__file__,
    "call": asyncio.run(call()),
    "importable": sorted(name for name in sys.argv[1:] if importlib.util.find_spec(name) is not None),
}))
"""


def _run(*args: str | Path, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    run = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=540, check=False
    )
    assert run.returncode == 0, f"{args}\n{run.stdout}\n{run.stderr}"
    return run.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this tree, built from a copy of it."""
    work = tmp_path_factory.mktemp("build")
    source = work / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=ignore)
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    pip = [sys.executable, "-m", "pip"]
    _run(*pip, "wheel", "-q", "--no-deps", *isolation, "--wheel-dir", work / "dist", source, cwd=work)
    (built,) = (work / "dist").glob("orchestratex-*.whl")
    return built


def test_the_plain_install_has_the_stubs_and_the_client_surface_only(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    _run(sys.executable, "-m", "pip", "--python", python, "install", "-q", wheel, cwd=tmp_path)

    report = json.loads(_run(python, "-c", PROBE, *SERVER_ONLY, cwd=tmp_path))

    assert report["importable"] == [], "a plain install must not bring the services' dependencies"
    assert Path(report["file"]).is_relative_to(env_dir), "imported from the checkout, not the installed wheel"
    assert report["exported"] == sorted(__import__("orchestratex").__all__)
    assert report["call"] in {"Unavailable", "DeadlineExceeded"}


def test_the_server_extra_names_every_service_dependency(wheel: Path, tmp_path: Path) -> None:
    """The wheel's metadata: the plain requirements are grpc and protobuf; the rest is under ``server``."""
    _run(sys.executable, "-m", "zipfile", "-e", wheel, tmp_path, cwd=tmp_path)
    (metadata,) = tmp_path.glob("orchestratex-*.dist-info/METADATA")
    lines = metadata.read_text(encoding="utf-8").splitlines()
    requires = [line.removeprefix("Requires-Dist: ") for line in lines if line.startswith("Requires-Dist: ")]
    plain = sorted(re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0] for r in requires if "extra ==" not in r)
    server = " ".join(r for r in requires if 'extra == "server"' in r)
    assert plain == ["googleapis-common-protos", "grpcio", "grpcio-health-checking", "grpcio-status", "protobuf"]
    for name in ("aiohttp", "aiosqlite", "httpx", "jsonschema", "numpy", "orjson", "pymongo", "scikit-learn"):
        assert name in server, name
    assert any("orchestratex[server]" in r and 'extra == "dev"' in r for r in requires)
