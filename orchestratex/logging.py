"""One log format for every process: JSON lines (or plain text for humans), with the request id.

Services log through ``logging.getLogger(__name__)`` with lazy ``%s`` arguments. Prompts and
completions are never logged at INFO. As a last line of defence, every registered secret is
replaced by ``[REDACTED]`` in formatted records.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, ClassVar

import orjson

from orchestratex import context

_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class _Redactor:
    secrets: ClassVar[list[str]] = []

    @classmethod
    def scrub(cls, text: str) -> str:
        for secret in cls.secrets:
            if secret in text:
                text = text.replace(secret, "[REDACTED]")
        return text


def register_secret(value: str) -> None:
    """Make sure ``value`` never appears in any log line of this process."""
    if value and len(value) >= 8 and value not in _Redactor.secrets:
        _Redactor.secrets.append(value)


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object per line."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = context.request_id.get()
        if rid:
            payload["request_id"] = rid
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        line = orjson.dumps(payload, default=str).decode()
        return _Redactor.scrub(line)


class TextFormatter(logging.Formatter):
    """Human-readable lines for terminals."""

    def __init__(self, service: str) -> None:
        super().__init__("%(asctime)s %(levelname)-7s " + service + " %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        return _Redactor.scrub(super().format(record))


def setup_logging(service: str, level: str = "INFO", fmt: str = "json") -> None:
    """Configure the root logger once per process, writing to stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if fmt == "json" else TextFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiohttp.access", "asyncio", "grpc._cython"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
