"""The model catalogue: limits, prices, typical speed and per-domain specialty priors of each model.

Loaded from ``catalogue.toml`` next to this module, or from ``settings.providers.catalogue_path``
(``ORX_CATALOGUE``). Prices are USD per million tokens; :func:`cost_usd` computes a call's cost
exactly (decimal arithmetic, rounded to 1e-9 USD).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from enum import StrEnum
from pathlib import Path
from typing import cast

from google.protobuf import duration_pb2

from orchestratex.config import Settings
from orchestratex.domains import DOMAINS
from orchestratex.domains import to_proto as domain_to_proto
from orchestratex.errors import ConfigError
from orchestratex.v1 import common_pb2
from services.providers._toml import Table, read_toml

DEFAULT_CATALOGUE = Path(__file__).with_name("catalogue.toml")
SIMULATED_PROVIDER = "simulated"

_MILLION = Decimal(1_000_000)
_NANO_USD = Decimal("1e-9")


@dataclass(frozen=True)
class Specialty:
    """A prior score in [0, 1] for one domain, with the reason for it."""

    score: float
    reason: str


class SchemaStyle(StrEnum):
    """How an endpoint takes a JSON Schema in ``response_format`` (a provider's ``schema_style``)."""

    JSON_SCHEMA = "json_schema"
    """OpenAI's form, used by OpenRouter, vLLM, Ollama and llama.cpp's own ``llama-server``:
    ``{"type": "json_schema", "json_schema": {"name", "strict", "schema"}}``."""
    JSON_OBJECT = "json_object"
    """llama-cpp-python's server, which rejects the form above and turns this one into a grammar:
    ``{"type": "json_object", "schema": {...}}``."""


@dataclass(frozen=True)
class ProviderSpec:
    """An OpenAI-compatible endpoint. The key is read from ``api_key_env`` (never stored here).

    ``streaming``: call the endpoint with ``stream: true`` (the default; cancellable, and timeouts
    can tell a slow first token from a hung stream). ``max_connections``: size of the HTTP
    connection pool kept for this endpoint. ``schema_style``: how the endpoint takes a JSON Schema
    (:class:`SchemaStyle`). ``probe_broken_streams``: when a stream breaks before its first event, ask
    the endpoint again without streaming and with ``max_tokens`` 1, and report ITS error; for servers
    such as llama-cpp-python's that report a request they cannot serve (a prompt longer than the
    context window) only as a status of a non-streaming call, and drop the connection of a stream.
    """

    name: str
    base_url: str
    api_key_env: str
    streaming: bool = True
    max_connections: int = 512
    schema_style: SchemaStyle = SchemaStyle.JSON_SCHEMA
    probe_broken_streams: bool = False


@dataclass(frozen=True)
class ModelSpec:
    """One model of the catalogue."""

    id: str
    display_name: str
    family: str
    provider: str
    context_length: int
    max_output_tokens: int
    default_max_tokens: int
    input_price_per_mtok: float
    output_price_per_mtok: float
    supports_json_mode: bool
    supports_structured_outputs: bool
    """The model honours a JSON Schema (``RESPONSE_FORMAT_TYPE_JSON_SCHEMA``); optional in the file, default false."""
    typical_ttft_ms: float
    typical_tokens_per_second: float
    specialties: Mapping[str, Specialty]

    def specialty(self, domain: str) -> float:
        """Specialty score for ``domain``; the mean over all domains when ``domain`` is empty."""
        if not domain:
            return sum(s.score for s in self.specialties.values()) / len(self.specialties)
        return self.specialties[domain].score


@dataclass(frozen=True)
class Catalogue:
    """The models and providers, in file order."""

    models: tuple[ModelSpec, ...]
    providers: Mapping[str, ProviderSpec]
    _by_id: Mapping[str, ModelSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", {m.id: m for m in self.models})

    def get(self, model_id: str) -> ModelSpec | None:
        """The model with this id, or None."""
        return self._by_id.get(model_id)

    def ids(self) -> tuple[str, ...]:
        """All model ids, in catalogue order."""
        return tuple(m.id for m in self.models)

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self.models)

    def __len__(self) -> int:
        return len(self.models)


def cost_usd(model: ModelSpec, prompt_tokens: int, completion_tokens: int) -> float:
    """Cost of a call in USD from catalogue prices, computed exactly and rounded to 1e-9."""
    # repr() gives the shortest decimal that round-trips, i.e. exactly the price written in the file.
    total = (
        Decimal(repr(model.input_price_per_mtok)) * prompt_tokens
        + Decimal(repr(model.output_price_per_mtok)) * completion_tokens
    ) / _MILLION
    return float(total.quantize(_NANO_USD, rounding=ROUND_HALF_EVEN))


def to_proto(
    model: ModelSpec,
    health: common_pb2.ModelHealth | None,
    simulated: bool,
    *,
    ttft_ms: float | None = None,
    tokens_per_second: float | None = None,
) -> common_pb2.ModelInfo:
    """``ModelInfo`` for ``model``. Simulated models report provider ``simulated``.

    ``ttft_ms`` / ``tokens_per_second`` override the catalogue's typical values (the simulator
    reports the speed callers will actually see).
    """
    ttft = duration_pb2.Duration()
    ttft.FromNanoseconds(round((model.typical_ttft_ms if ttft_ms is None else ttft_ms) * 1_000_000))
    info = common_pb2.ModelInfo(
        id=model.id,
        display_name=model.display_name,
        family=model.family,
        provider=SIMULATED_PROVIDER if simulated else model.provider,
        context_length=model.context_length,
        max_output_tokens=model.max_output_tokens,
        input_price_per_mtok=model.input_price_per_mtok,
        output_price_per_mtok=model.output_price_per_mtok,
        specialties=[
            common_pb2.DomainScore(domain=cast("common_pb2.Domain", domain_to_proto(d)), score=s.score, reason=s.reason)
            for d, s in model.specialties.items()
        ],
        simulated=simulated,
        supports_json_mode=model.supports_json_mode,
        supports_structured_outputs=model.supports_structured_outputs,
        typical_ttft=ttft,
        typical_tokens_per_second=(model.typical_tokens_per_second if tokens_per_second is None else tokens_per_second),
    )
    if health is not None:
        info.health.CopyFrom(health)
    return info


def load_catalogue(settings: Settings) -> Catalogue:
    """The catalogue at ``settings.providers.catalogue_path``, or the packaged default."""
    own = settings.providers
    return load_catalogue_file(own.catalogue_path or DEFAULT_CATALOGUE, own.openrouter_base_url)


def load_catalogue_file(path: Path, default_base_url: str) -> Catalogue:
    """Parse and validate a catalogue file. Raises :class:`ConfigError` naming the file and key."""
    root = Table(read_toml(path, "catalogue"), "", str(path))
    default_max = root.integer("default_max_tokens", 1, 10_000_000, 4096)
    providers: dict[str, ProviderSpec] = {}
    for table in root.tables("providers"):
        spec = _provider(table, default_base_url)
        if spec.name in providers:
            raise table.error("name", f"duplicate provider {spec.name!r}")
        providers[spec.name] = spec
    models: list[ModelSpec] = []
    for table in root.tables("models"):
        model = _model(table, default_max)
        if model.provider not in providers:
            raise table.error("provider", f"unknown provider {model.provider!r}; define it under [[providers]]")
        if any(m.id == model.id for m in models):
            raise table.error("id", f"duplicate model id {model.id!r}")
        models.append(model)
    root.finish()
    if not models:
        raise ConfigError(f"{path}: models: at least one [[models]] entry is required")
    return Catalogue(models=tuple(models), providers=providers)


def _provider(table: Table, default_base_url: str) -> ProviderSpec:
    spec = ProviderSpec(
        name=table.text("name"),
        base_url=(table.text("base_url", "", allow_empty=True).strip() or default_base_url).rstrip("/"),
        api_key_env=table.text("api_key_env"),
        streaming=table.boolean("streaming", True),
        max_connections=table.integer("max_connections", 1, 10_000, 512),
        schema_style=_schema_style(table),
        probe_broken_streams=table.boolean("probe_broken_streams", False),
    )
    table.finish()
    if not spec.base_url.startswith(("http://", "https://")):
        raise table.error("base_url", f"expected an http(s) URL, got {spec.base_url!r}")
    return spec


def _schema_style(table: Table) -> SchemaStyle:
    value = table.text("schema_style", SchemaStyle.JSON_SCHEMA.value)
    try:
        return SchemaStyle(value)
    except ValueError:
        choices = " or ".join(repr(s.value) for s in SchemaStyle)
        raise table.error("schema_style", f"expected {choices}, got {value!r}") from None


def _model(table: Table, default_max: int) -> ModelSpec:
    context_length = table.integer("context_length", 1, 100_000_000)
    max_output = table.integer("max_output_tokens", 1, context_length)
    specialties = table.table("specialties", required=True)
    scores: dict[str, Specialty] = {}
    for domain in DOMAINS:
        entry = specialties.table(domain, required=True)
        scores[domain] = Specialty(score=entry.number("score", 0.0, 1.0), reason=entry.text("reason"))
        entry.finish()
    specialties.finish()
    model = ModelSpec(
        id=table.text("id"),
        display_name=table.text("display_name"),
        family=table.text("family"),
        provider=table.text("provider"),
        context_length=context_length,
        max_output_tokens=max_output,
        default_max_tokens=table.integer("default_max_tokens", 1, max_output, min(default_max, max_output)),
        input_price_per_mtok=table.number("input_price_per_mtok", 0.0, 10_000.0),
        output_price_per_mtok=table.number("output_price_per_mtok", 0.0, 10_000.0),
        supports_json_mode=table.boolean("supports_json_mode"),
        supports_structured_outputs=table.boolean("supports_structured_outputs", False),
        typical_ttft_ms=table.number("typical_ttft_ms", 0.0, 600_000.0),
        typical_tokens_per_second=table.number("typical_tokens_per_second", 0.001, 1_000_000.0),
        specialties=scores,
    )
    table.finish()
    return model
