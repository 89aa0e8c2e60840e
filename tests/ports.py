"""Test helper: a free TCP port on loopback (for servers that must be restarted on the same port)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port nothing listens on right now (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
