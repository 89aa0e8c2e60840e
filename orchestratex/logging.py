"""One log format for every process: JSON lines (or plain text for humans), with the request id and, when
a span is active (tracing on, :mod:`orchestratex.tracing`), its ``trace_id`` and ``span_id`` (hex, as
trace backends show them), so a log line leads to its trace and back.

Services log through ``logging.getLogger(__name__)`` with lazy ``%s`` arguments. Prompts and
completions are never logged at INFO. As a last line of defence, every registered secret is
replaced by ``[REDACTED]`` in formatted records — not only verbatim but in every form
:class:`orchestratex.secrets.SecretScrubber` knows: any run of 16+ of its characters, URL-encoded or
JSON-escaped.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, ClassVar, Final

import orjson

from orchestratex import context
from orchestratex.secrets import MIN_SECRET, SecretScrubber

_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class _Redactor:
    secrets: ClassVar[list[str]] = []
    _scrubber: ClassVar[SecretScrubber] = SecretScrubber(())
    _built_for: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def scrub(cls, text: str) -> str:
        if not cls.secrets:
            return text
        current = tuple(cls.secrets)
        if current != cls._built_for:  # registered since the last line (or restored by a test)
            cls._scrubber, cls._built_for = SecretScrubber(current), current
        return cls._scrubber.scrub(text)


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``[REDACTED]`` (for what leaves the process other
    than log lines: span attributes, see :mod:`orchestratex.tracing`)."""
    return _Redactor.scrub(text)


_TRACE_MODULE: Final = "opentelemetry.trace"


def trace_ids() -> tuple[str, str] | None:
    """The hex trace id and span id of the active span, or None when there is none.

    OpenTelemetry is looked up, not imported: a process that never loaded it (tracing off, or a plain install
    of the library) has no span to report, and logging must not cost it the import.
    """
    otel = sys.modules.get(_TRACE_MODULE)
    if otel is None:
        return None
    span_context = otel.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    return f"{span_context.trace_id:032x}", f"{span_context.span_id:016x}"


def register_secret(value: str) -> None:
    """Make sure ``value`` — in any form a vendor may echo it — never appears in any log line of this process.

    Values shorter than 8 characters are ignored (see :data:`orchestratex.secrets.MIN_SECRET`).
    """
    if value and len(value) >= MIN_SECRET and value not in _Redactor.secrets:
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
        ids = trace_ids()
        if ids is not None:
            payload["trace_id"], payload["span_id"] = ids
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        line = orjson.dumps(payload, default=str).decode()
        return _Redactor.scrub(line)


class TextFormatter(logging.Formatter):
    """Human-readable lines for terminals; inside a span they end with ``trace_id=... span_id=...``."""

    def __init__(self, service: str) -> None:
        super().__init__("%(asctime)s %(levelname)-7s " + service + " %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = trace_ids()
        if ids is not None:
            first, newline, rest = line.partition("\n")  # after the message, before any traceback
            line = f"{first} trace_id={ids[0]} span_id={ids[1]}{newline}{rest}"
        return _Redactor.scrub(line)


def setup_logging(service: str, level: str = "INFO", fmt: str = "json") -> None:
    """Configure the root logger once per process, writing to stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if fmt == "json" else TextFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiohttp.access", "asyncio", "grpc._cython"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
