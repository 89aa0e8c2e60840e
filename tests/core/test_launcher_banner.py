"""The banner `orchestratex up` prints suggests only commands that are installed: grpcurl only when it is there."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from orchestratex.config import Settings
from services import launcher


def _banner(tmp_path: Path) -> str:
    out = io.StringIO()
    launcher._print_banner(Settings.from_env({"ORX_DATA_DIR": str(tmp_path / "data")}), out)
    return out.getvalue()


@pytest.fixture
def venv_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A venv's bin directory of its own as ``sys.executable``'s, and a PATH with nothing on it."""
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "orchestratex").write_text("#!/bin/sh\n")
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    return bin_dir


def _executable(path: Path) -> None:
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)


def test_without_it_the_banner_does_not_suggest_it(tmp_path: Path, venv_bin: Path) -> None:
    banner = _banner(tmp_path)
    assert "-plaintext" not in banner and " grpcurl " not in banner
    assert f'{venv_bin / "orchestratex"} ask "' in banner


def test_grpcurl_beside_the_venvs_python_is_suggested_by_its_path(tmp_path: Path, venv_bin: Path) -> None:
    _executable(venv_bin / "grpcurl")
    banner = _banner(tmp_path)
    assert f"{venv_bin / 'grpcurl'} -plaintext 127.0.0.1:50053 list" in banner
    assert "OrchestratorService/Orchestrate" in banner


def test_grpcurl_on_the_path_is_suggested_by_name(
    tmp_path: Path, venv_bin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "usr-bin"
    elsewhere.mkdir()
    _executable(elsewhere / "grpcurl")
    monkeypatch.setenv("PATH", str(elsewhere))
    banner = _banner(tmp_path)
    assert "\n  grpcurl -plaintext 127.0.0.1:50053 list\n" in banner
