"""The command line: clear errors, no tracebacks, for the things people get wrong."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "orchestratex"), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_up_refuses_a_port_in_use_naming_the_variable(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = _run(["up"], {"ORX_DATA_DIR": str(tmp_path), "ORX_SELECTOR_LISTEN": f"127.0.0.1:{port}"})
    assert run.returncode == 1
    assert f"127.0.0.1:{port} is already in use" in run.stderr
    assert "ORX_SELECTOR_LISTEN" in run.stderr
    assert "Traceback" not in run.stderr


def test_serve_on_a_busy_port_fails_cleanly(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = _run(["serve", "analytics"], {"ORX_DATA_DIR": str(tmp_path), "ORX_ANALYTICS_LISTEN": f"127.0.0.1:{port}"})
    assert run.returncode == 1
    assert "cannot listen on" in run.stderr and "ORX_ANALYTICS_LISTEN" in run.stderr
    assert "Traceback" not in run.stderr


def test_a_configuration_error_names_the_variable(tmp_path: Path) -> None:
    run = _run(["serve", "selector"], {"ORX_DATA_DIR": str(tmp_path), "ORX_RPC_TIMEOUT": "soon"})
    assert run.returncode == 2
    assert "ORX_RPC_TIMEOUT" in run.stderr and "Traceback" not in run.stderr
