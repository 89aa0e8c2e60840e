"""The command line: clear errors, no tracebacks, for the things people get wrong."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.core.serving import lines_until
from tests.ports import free_port

BIN = Path(sys.executable).parent
SERVICES = ("selector", "providers", "orchestrator", "analytics", "gateway")


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


# ------------------------------------------------------------------------------ ORX_DATA_DIR


def _read_only_dir(tmp_path: Path) -> tuple[Path, list[str]]:
    """A directory no one may write to, and the prefix of a command that runs where that holds.

    Root ignores permission bits, so as root the directory becomes a read-only tmpfs, mounted in a private
    mount namespace of the command alone (``unshare``; gone when it exits). Otherwise chmod 0o555 does.
    """
    path = tmp_path / "read-only"
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        return path, []
    if shutil.which("unshare") is None or subprocess.run(["unshare", "--mount", "true"], check=False).returncode:
        pytest.skip("running as root without unshare --mount: cannot make a directory read-only for root")
    mount = 'mount -t tmpfs -o ro tmpfs "$0" && exec "$@"'
    return path, ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", mount, str(path)]


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize("command", [["up"], ["serve", "orchestrator"], ["serve", "analytics"]])
def test_a_data_dir_that_cannot_be_created_is_one_line_naming_the_variable(tmp_path: Path, command: list[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    data_dir = blocker / "data"
    run = _run(command, {"ORX_DATA_DIR": str(data_dir), **_free_listen()})
    assert run.returncode == 2
    assert _one_line(run.stderr) == (
        f"orchestratex: configuration error: ORX_DATA_DIR={data_dir}: cannot create (Not a directory)"
    )


@pytest.mark.parametrize("command", [["up"], ["serve", "analytics"]])
def test_a_read_only_data_dir_is_one_line_naming_the_variable(tmp_path: Path, command: list[str]) -> None:
    data_dir, prefix = _read_only_dir(tmp_path)
    run = subprocess.run(
        [*prefix, str(BIN / "orchestratex"), *command],
        env={**os.environ, "ORX_DATA_DIR": str(data_dir), **_free_listen()},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 2
    line = _one_line(run.stderr)
    assert line.startswith(f"orchestratex: configuration error: ORX_DATA_DIR={data_dir}: not writable (")
    assert line.endswith(("(Read-only file system)", "(Permission denied)")), line


def test_services_without_a_store_do_not_need_the_data_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = {**os.environ, "ORX_DATA_DIR": str(blocker / "data"), "ORX_PROVIDERS_LISTEN": "127.0.0.1:0"}
    assert "serving" in lines_until(["serve", "providers"], env)[-1]


# ------------------------------------------------------------- gRPC listen addresses beyond loopback


@pytest.mark.parametrize(("service", "host"), [("selector", "0.0.0.0"), ("orchestrator", "[::]")])
def test_serve_refuses_to_listen_beyond_loopback_without_the_opt_in(tmp_path: Path, service: str, host: str) -> None:
    var = f"ORX_{service.upper()}_LISTEN"
    run = _run(["serve", service], {"ORX_DATA_DIR": str(tmp_path), var: f"{host}:0"})
    assert run.returncode == 2
    line = _one_line(run.stderr)
    assert line.startswith(f"orchestratex: configuration error: {var}: ")
    assert "beyond loopback" in line and "x-orx-tenant" in line and "ORX_GRPC_ALLOW_NON_LOOPBACK=1" in line


def test_up_refuses_a_grpc_service_beyond_loopback_before_starting_anything(tmp_path: Path) -> None:
    listen = {**_free_listen(), "ORX_PROVIDERS_LISTEN": "0.0.0.0:0"}
    run = _run(["up"], {"ORX_DATA_DIR": str(tmp_path), **listen})
    assert run.returncode == 2
    assert "ORX_PROVIDERS_LISTEN" in _one_line(run.stderr) and run.stdout == ""


def test_serve_listens_beyond_loopback_with_the_opt_in(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "ORX_DATA_DIR": str(tmp_path),
        "ORX_ANALYTICS_LISTEN": "0.0.0.0:0",
        "ORX_GRPC_ALLOW_NON_LOOPBACK": "1",
        "ORX_LOG_FORMAT": "text",
    }
    lines = lines_until(["serve", "analytics"], env)
    (line,) = [line for line in lines if "beyond loopback" in line]
    assert "ORX_GRPC_ALLOW_NON_LOOPBACK" in line and "x-orx-tenant" in line


def _free_listen() -> dict[str, str]:
    """Every service on a free loopback port, so `up` never collides with a running suite."""
    return {f"ORX_{name.upper()}_LISTEN": f"127.0.0.1:{free_port()}" for name in SERVICES}
