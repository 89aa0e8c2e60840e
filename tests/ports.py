"""Test helper: a free TCP port on loopback (for servers that must be restarted on the same port).

Ports come from below the kernel's ephemeral range: a port from inside it (what binding port 0 gives)
can be taken, between the test choosing it and a service binding it, by any outgoing connection on the
machine, which then shows up as a rare "address already in use" in a start-up test.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_handed_out: set[int] = set()
_rng = random.Random()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A TCP port nothing listens on right now (bound, then released), never handed out before by this
    process, and outside the ephemeral range when there is room below it."""
    low = _ephemeral_low()
    if low > 12000:
        for _ in range(200):
            port = _rng.randrange(10000, low)
            if port in _handed_out:
                continue
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _handed_out.add(port)
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    _handed_out.add(port)
    return port
