"""The services' event loop: uvloop by default where installed, asyncio's on request or as the fallback."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestratex import eventloop
from orchestratex.errors import ConfigError

BIN = Path(sys.executable).parent


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_auto_runs_on_uvloop_when_installed() -> None:
    assert importlib.util.find_spec("uvloop") is not None, "uvloop is a dependency on this platform"
    assert eventloop.run(_loop_module(), "auto").startswith("uvloop")
    assert eventloop.loop_name("auto") == "uvloop"


def test_asyncio_is_chosen_explicitly() -> None:
    assert eventloop.loop_factory("asyncio") is None
    assert eventloop.run(_loop_module(), "asyncio").startswith("asyncio")
    assert eventloop.loop_name("asyncio") == "asyncio"


def test_without_uvloop_auto_falls_back_and_uvloop_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvloop" else real(name, *a))
    assert eventloop.loop_factory("auto") is None
    with pytest.raises(ConfigError, match="ORX_EVENT_LOOP: uvloop is not installed"):
        eventloop.loop_factory("uvloop")


def test_run_returns_the_result_and_propagates_errors() -> None:
    async def fail() -> None:
        raise ValueError("boom")

    assert eventloop.run(asyncio.sleep(0, result=42), "auto") == 42
    with pytest.raises(ValueError, match="boom"):
        eventloop.run(fail(), "auto")


@pytest.mark.parametrize(("choice", "expected"), [("auto", "uvloop"), ("asyncio", "asyncio")])
def test_a_served_service_reports_its_event_loop(tmp_path: Path, choice: str, expected: str) -> None:
    env = {
        **os.environ,
        "ORX_DATA_DIR": str(tmp_path),
        "ORX_ANALYTICS_LISTEN": "127.0.0.1:0",
        "ORX_LOG_FORMAT": "text",
        "ORX_EVENT_LOOP": choice,
    }
    proc = subprocess.Popen(
        [str(BIN / "orchestratex"), "serve", "analytics"], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stderr is not None
        serving = next((line for line in proc.stderr if "serving" in line), "")  # EOF if it dies first
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert f"({expected} event loop)" in serving, serving
    assert proc.returncode == 0
