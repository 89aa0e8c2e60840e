"""``python -m gateway``: run the HTTP/WebSocket gateway (same as ``orchestratex serve gateway``).

``python -m gateway hash-key`` reads an API key on stdin (so it never lands in shell history) and prints
the ``sha256:<hex>`` form to put in ``ORX_GATEWAY_API_KEYS`` (as ``tenant:sha256:<hex>``).
``python -m gateway new-key TENANT`` makes a random key and prints it with its configuration entry.
Neither command reads the environment or needs the services.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from collections.abc import Sequence

from gateway.security import hash_key


def _hash_key() -> int:
    if sys.stdin.isatty():
        import getpass  # noqa: PLC0415 - interactive use only

        key = getpass.getpass("API key (not echoed): ")
    else:
        key = sys.stdin.readline()
    key = key.strip()
    if not key:
        print("gateway hash-key: no key on stdin", file=sys.stderr)
        return 2
    print(hash_key(key))
    return 0


def _new_key(tenant: str) -> int:
    # URL-safe base64: valid in an Authorization header and as a WebSocket subprotocol token.
    key = "orx_" + secrets.token_urlsafe(32)
    print(f"key:    {key}")
    print(f"config: {tenant}:{hash_key(key)}")
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """Serve (no arguments), or run one of the key helpers."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        from services.cli import main as cli_main  # noqa: PLC0415 - only when serving

        cli_main(["serve", "gateway"])
        return
    parser = argparse.ArgumentParser(prog="python -m gateway", description="OrchestrateX gateway helpers")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("hash-key", help="read an API key on stdin and print its sha256:<hex> configuration form")
    new = sub.add_parser("new-key", help="make a random API key and print it with its configuration entry")
    new.add_argument("tenant", help="the tenant the key belongs to (letters, digits, '.', '_', '-')")
    parsed = parser.parse_args(args)
    code = _hash_key() if parsed.command == "hash-key" else _new_key(parsed.tenant)
    raise SystemExit(code)


if __name__ == "__main__":
    main()
