"""Simulator profile: per-model speed, failure rates and hidden skill, loaded from TOML.

The packaged ``sim_profile.toml`` documents every key; ``settings.providers.sim_profile`` (``ORX_SIM_PROFILE``)
replaces it. Values resolve key by key: built-in default < catalogue < ``[defaults]`` < ``[models."<id>"]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from orchestratex.domains import DOMAINS
from orchestratex.errors import ConfigError
from services.providers._toml import Table, read_toml
from services.providers.catalogue import Catalogue, ModelSpec

DEFAULT_PROFILE = Path(__file__).with_name("sim_profile.toml")


@dataclass(frozen=True)
class FailureRates:
    """Probability of each simulated failure per call (0-1)."""

    rate_limit: float = 0.0
    retry_after_seconds: float = 2.0
    upstream_error: float = 0.0
    timeout: float = 0.0
    mid_stream_error: float = 0.0
    invalid_json: float = 0.0


@dataclass(frozen=True)
class ModelProfile:
    """How one simulated model behaves. Times are unscaled (before ``sim_speed``)."""

    ttft_ms: float
    tokens_per_second: float
    timeout_after_ms: float
    answer_suffix: str
    failures: FailureRates
    skills: Mapping[str, float]

    def skill(self, domain: str) -> float:
        """Hidden skill in ``domain``; the mean skill when ``domain`` is empty."""
        if not domain:
            return sum(self.skills.values()) / len(self.skills)
        return self.skills[domain]


@dataclass(frozen=True)
class SimProfile:
    """The whole profile."""

    seed: int
    quality_noise_sd: float
    refine_gain: float
    regress_rate: float
    models: Mapping[str, ModelProfile]
    latency_jitter: bool = True
    critic_error_penalty: float = 2.5
    """Score points a critic of skill 1 takes off an answer that is wrong on a keyed item (scaled by its skill)."""
    coverage_weight: float = 0.45
    """How much the aspects a draft lacks lower its score: before noise and biases a draft of hidden quality q
    showing a share c of its domain's aspects scores ``10 × (0.3 + 0.7 q) × (1 - coverage_weight × (1 - c))``."""


_RATES = tuple(f.name for f in fields(FailureRates) if f.name != "retry_after_seconds")


def load_profile(path: Path | None, catalogue: Catalogue) -> SimProfile:
    """Load ``path`` (or the packaged default). Raises :class:`ConfigError` naming file and key."""
    path = path or DEFAULT_PROFILE
    root = Table(read_toml(path, "simulator profile"), "", str(path))
    seed = root.integer("seed", 0, 2**63 - 1, 0)
    noise = root.number("quality_noise_sd", 0.0, 1.0, 0.08)
    gain = root.number("refine_gain", 0.0, 1.0, 0.5)
    regress = root.number("regress_rate", 0.0, 1.0, 0.3)
    penalty = root.number("critic_error_penalty", 0.0, 10.0, 2.5)
    coverage = root.number("coverage_weight", 0.0, 1.0, 0.45)
    jitter = root.boolean("latency_jitter", True)
    defaults = _overrides(root.table("defaults"), allow_skill=False)
    per_model: dict[str, dict[str, Any]] = {}
    models_table = root.table("models")
    for model_id in models_table.names():
        if catalogue.get(model_id) is None:
            raise models_table.error(model_id, f"unknown model; the catalogue has {', '.join(catalogue.ids())}")
        per_model[model_id] = _overrides(models_table.table(model_id), allow_skill=True)
    models_table.finish()
    root.finish()
    models = {m.id: _resolve(m, defaults, per_model.get(m.id, {}), str(path)) for m in catalogue}
    return SimProfile(
        seed=seed,
        quality_noise_sd=noise,
        refine_gain=gain,
        regress_rate=regress,
        models=models,
        latency_jitter=jitter,
        critic_error_penalty=penalty,
        coverage_weight=coverage,
    )


def _overrides(table: Table, *, allow_skill: bool) -> dict[str, Any]:
    """The keys present in one ``[defaults]`` or ``[models."<id>"]`` table, validated."""
    out: dict[str, Any] = {}
    if table.has("ttft_ms"):
        out["ttft_ms"] = table.number("ttft_ms", 0.0, 600_000.0)
    if table.has("tokens_per_second"):
        out["tokens_per_second"] = table.number("tokens_per_second", 0.001, 1_000_000.0)
    if table.has("timeout_after_ms"):
        out["timeout_after_ms"] = table.number("timeout_after_ms", 0.0, 3_600_000.0)
    if table.has("answer_suffix"):
        out["answer_suffix"] = table.text("answer_suffix", allow_empty=True)
    failures = table.table("failures")
    rates: dict[str, float] = {}
    for name in _RATES:
        if failures.has(name):
            rates[name] = failures.number(name, 0.0, 1.0)
    if failures.has("retry_after_seconds"):
        rates["retry_after_seconds"] = failures.number("retry_after_seconds", 0.0, 86_400.0)
    failures.finish()
    out["failures"] = rates
    if allow_skill:
        skills = table.table("skill")
        out["skill"] = {d: skills.number(d, 0.0, 1.0) for d in DOMAINS if skills.has(d)}
        skills.finish()
    table.finish()
    return out


def _resolve(model: ModelSpec, defaults: dict[str, Any], own: dict[str, Any], source: str) -> ModelProfile:
    def pick(key: str, fallback: Any) -> Any:
        return own.get(key, defaults.get(key, fallback))

    failures = FailureRates(**{**defaults["failures"], **own.get("failures", {})})
    if sum(getattr(failures, name) for name in _RATES if name != "invalid_json") > 1.0 + 1e-9:
        raise ConfigError(
            f"{source}: models.{model.id!r}.failures: rate_limit + upstream_error + timeout + "
            "mid_stream_error must not exceed 1"
        )
    skills = own.get("skill", {})
    return ModelProfile(
        ttft_ms=pick("ttft_ms", model.typical_ttft_ms),
        tokens_per_second=pick("tokens_per_second", model.typical_tokens_per_second),
        timeout_after_ms=pick("timeout_after_ms", 10_000.0),
        answer_suffix=pick("answer_suffix", ""),
        failures=failures,
        skills={d: skills.get(d, model.specialties[d].score) for d in DOMAINS},
    )
