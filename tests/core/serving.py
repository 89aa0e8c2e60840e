"""Test helper: run an ``orchestratex`` command until its log says something, then stop it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def lines_until(args: list[str], env: dict[str, str], marker: str = "serving") -> list[str]:
    """Run ``orchestratex <args>`` until a stderr line contains ``marker`` (or it dies), then stop it with
    SIGTERM; its stderr lines. Fails unless it exited cleanly."""
    proc = subprocess.Popen([str(BIN / "orchestratex"), *args], env=env, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # EOF if it dies first
            lines.append(line)
            if marker in line:
                break
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert proc.returncode == 0, lines
    return lines
