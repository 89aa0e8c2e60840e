""":class:`Settings`: the sections composed, and parsed from the environment only as far as a command needs."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal, cast, get_args

from orchestratex.config._sections import (
    AnalyticsSettings,
    CommonSettings,
    GatewaySettings,
    OrchestratorSettings,
    ProvidersSettings,
    RestartPolicy,
    SelectorSettings,
)
from orchestratex.config._values import Secret

Section = Literal["common", "selector", "providers", "orchestrator", "analytics", "gateway", "restart"]
"""The name of a section: an attribute of :class:`Settings`."""
SECTIONS: tuple[Section, ...] = get_args(Section)


class SectionNotParsed(RuntimeError):
    """Code read a section its command did not ask :meth:`Settings.from_env` to parse (a programming error)."""


class _NotParsed:
    """Stands in for a section that was not parsed: reading any of its fields raises :class:`SectionNotParsed`."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise SectionNotParsed(
            f"settings.{self._name}.{attr}: the {self._name} section was not parsed for this command "
            f"(name it in Settings.from_env(sections=...))"
        )

    def __repr__(self) -> str:
        return f"<{self._name} settings: not parsed>"


@dataclass(frozen=True)
class Settings:
    """Everything a process needs to know, read once at start-up, as one frozen section per consumer.

    A service reads :attr:`common` and its own section; ``orchestratex up`` also reads :attr:`restart`.
    Build it with :meth:`from_env`; every section has defaults, so tests may also compose one directly.
    """

    common: CommonSettings = field(default_factory=CommonSettings)
    """Every process: addresses, logging, event loop, limits, storage."""
    selector: SelectorSettings = field(default_factory=SelectorSettings)
    """The selector's ranking and learning."""
    providers: ProvidersSettings = field(default_factory=ProvidersSettings)
    """The providers service: mode, keys, catalogue, simulator, upstream timeouts and resilience."""
    orchestrator: OrchestratorSettings = field(default_factory=OrchestratorSettings)
    """The orchestrator's outbox, lease and shadow sampling."""
    analytics: AnalyticsSettings = field(default_factory=AnalyticsSettings)
    """The analytics service's own settings (none yet)."""
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    """The gateway's keys, limits and timeouts."""
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    """How ``orchestratex up`` restarts a service that died."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, sections: Iterable[Section] | None = None) -> Settings:
        """Parse and validate the environment (``os.environ`` when ``env`` is None).

        ``sections`` names the sections to parse besides ``common``, which is always parsed; None parses them
        all. A section left out is not read at all, so its variables cannot stop the command, and reading it
        raises :class:`SectionNotParsed`. Raises :class:`ConfigError` naming the variable.
        """
        env = os.environ if env is None else env
        chosen = set(SECTIONS) if sections is None else {"common", *sections}
        unknown = chosen - set(SECTIONS)
        if unknown:
            raise ValueError(f"unknown settings sections {sorted(unknown)}; expected some of {', '.join(SECTIONS)}")
        values: dict[str, Any] = {}
        for f in fields(cls):
            kind = cast(Any, _SECTION_TYPES[f.name])
            values[f.name] = kind.from_env(env) if f.name in chosen else _NotParsed(f.name)
        return cls(**values)

    @property
    def parsed(self) -> tuple[Section, ...]:
        """The sections this object holds (the others were left out of :meth:`from_env`)."""
        return tuple(name for name in SECTIONS if not isinstance(getattr(self, name), _NotParsed))

    def secrets(self) -> list[Secret]:
        """The secrets of the parsed sections (for log redaction), empty ones left out."""
        found = [self.common.mongodb.uri]
        if "providers" in self.parsed:
            found.append(self.providers.openrouter_api_key)
        return [secret for secret in found if secret]


_SECTION_TYPES: dict[str, type] = {
    "common": CommonSettings,
    "selector": SelectorSettings,
    "providers": ProvidersSettings,
    "orchestrator": OrchestratorSettings,
    "analytics": AnalyticsSettings,
    "gateway": GatewaySettings,
    "restart": RestartPolicy,
}
