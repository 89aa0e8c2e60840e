"""The catalogue: packaged content, exact cost math, proto conversion, override file, config errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from orchestratex.config import Settings
from orchestratex.domains import DOMAINS, from_proto
from orchestratex.errors import ConfigError
from orchestratex.v1 import common_pb2
from services.providers.catalogue import Catalogue, cost_usd, load_catalogue, to_proto

SIX = (
    "z-ai/glm-4.5",
    "openai/gpt-oss-120b",
    "meta-llama/llama-4-maverick",
    "moonshotai/kimi-k2",
    "qwen/qwen3-coder",
    "tngtech/deepseek-r1t2-chimera",
)

# (id, family, context, input $/Mtok, output $/Mtok) — mid-2026 prices from docs/openrouter.md.
EXPECTED = [
    ("z-ai/glm-4.5", "glm", 131_072, 0.60, 2.20),
    ("openai/gpt-oss-120b", "gpt-oss", 131_072, 0.039, 0.18),
    ("meta-llama/llama-4-maverick", "llama", 1_048_576, 0.15, 0.60),
    ("moonshotai/kimi-k2", "kimi", 131_072, 0.57, 2.30),
    ("qwen/qwen3-coder", "qwen", 262_144, 0.22, 1.80),
    ("tngtech/deepseek-r1t2-chimera", "deepseek", 163_840, 0.30, 1.20),
]

MINIMAL = """
[[providers]]
name = "local"
base_url = "http://127.0.0.1:9/v1"
api_key_env = "LOCAL_KEY"

[[models]]
id = "acme/tiny"
display_name = "Tiny"
family = "acme"
provider = "local"
context_length = 1000
max_output_tokens = 200
input_price_per_mtok = 1.0
output_price_per_mtok = 2.0
supports_json_mode = false
typical_ttft_ms = 10
typical_tokens_per_second = 100
{specialties}
"""


def specialties(skip: str = "") -> str:
    return "\n".join(f'specialties.{d} = {{ score = 0.5, reason = "Because." }}' for d in DOMAINS if d != skip)


def test_packaged_catalogue_has_the_six_models_in_order(catalogue: Catalogue) -> None:
    assert catalogue.ids() == SIX
    assert len(catalogue) == 6
    assert catalogue.get("nope/model") is None


@pytest.mark.parametrize(("model_id", "family", "context", "price_in", "price_out"), EXPECTED)
def test_model_facts(
    catalogue: Catalogue, model_id: str, family: str, context: int, price_in: float, price_out: float
) -> None:
    model = catalogue.get(model_id)
    assert model is not None
    assert (model.family, model.provider, model.context_length) == (family, "openrouter", context)
    assert (model.input_price_per_mtok, model.output_price_per_mtok) == (price_in, price_out)
    assert 0 < model.default_max_tokens <= model.max_output_tokens < model.context_length
    assert model.typical_ttft_ms > 0 and model.typical_tokens_per_second > 0
    assert tuple(model.specialties) == DOMAINS
    for domain, spec in model.specialties.items():
        assert 0.0 <= spec.score <= 1.0, domain
        assert spec.reason.strip().endswith("."), domain


def test_specialties_reflect_what_is_known(catalogue: Catalogue) -> None:
    def best(domain: str) -> str:
        return max(catalogue, key=lambda m: m.specialties[domain].score).id

    assert best("coding") == "qwen/qwen3-coder"
    assert best("math") == "tngtech/deepseek-r1t2-chimera"
    assert best("reasoning") == "tngtech/deepseek-r1t2-chimera"
    assert best("summarization") == "meta-llama/llama-4-maverick"
    assert best("creative") == "moonshotai/kimi-k2"
    cheapest = min(catalogue, key=lambda m: m.input_price_per_mtok + m.output_price_per_mtok)
    assert cheapest.id == "openai/gpt-oss-120b"


def test_openrouter_provider_uses_the_configured_base_url(make_settings: Callable[..., Settings]) -> None:
    cat = load_catalogue(make_settings(ORX_OPENROUTER_BASE_URL="http://127.0.0.1:8999/api/v1/"))
    provider = cat.providers["openrouter"]
    assert provider.base_url == "http://127.0.0.1:8999/api/v1"
    assert provider.api_key_env == "OPENROUTER_API_KEY"


def test_cost_is_exact(catalogue: Catalogue) -> None:
    gpt_oss = catalogue.get("openai/gpt-oss-120b")
    glm = catalogue.get("z-ai/glm-4.5")
    assert gpt_oss is not None and glm is not None
    # (0.039 * 1234 + 0.18 * 567) / 1e6 = 0.000150186 exactly; naive float math gives 0.00015018600000000002.
    assert cost_usd(gpt_oss, 1234, 567) == 0.000150186
    assert cost_usd(glm, 1_000_000, 1_000_000) == 2.80
    assert cost_usd(glm, 0, 0) == 0.0
    # Rounded to 1e-9 USD: one prompt token of gpt-oss costs 3.9e-8.
    assert cost_usd(gpt_oss, 1, 0) == 0.000000039


def test_to_proto(catalogue: Catalogue) -> None:
    model = catalogue.get("qwen/qwen3-coder")
    assert model is not None
    health = common_pb2.ModelHealth(circuit_state=common_pb2.CIRCUIT_STATE_CLOSED)
    info = to_proto(model, health, True, ttft_ms=0.7, tokens_per_second=70_000)
    assert (info.id, info.provider, info.simulated, info.family) == (model.id, "simulated", True, "qwen")
    assert [from_proto(s.domain) for s in info.specialties] == list(DOMAINS)
    assert info.specialties[0].reason == model.specialties["coding"].reason
    assert info.health.circuit_state == common_pb2.CIRCUIT_STATE_CLOSED
    assert info.typical_ttft.ToNanoseconds() == 700_000
    assert info.typical_tokens_per_second == 70_000
    live = to_proto(model, None, False)
    assert live.provider == "openrouter" and not live.simulated
    assert live.typical_ttft.ToMilliseconds() == model.typical_ttft_ms
    assert not live.HasField("health")


def test_override_file_replaces_the_catalogue(
    make_settings: Callable[..., Settings], write_file: Callable[..., Path]
) -> None:
    path = write_file(MINIMAL.format(specialties=specialties()))
    cat = load_catalogue(make_settings(ORX_CATALOGUE=str(path)))
    assert cat.ids() == ("acme/tiny",)
    tiny = cat.get("acme/tiny")
    assert tiny is not None
    assert tiny.default_max_tokens == 200  # the 4096 default is capped by max_output_tokens
    assert cat.providers["local"].base_url == "http://127.0.0.1:9/v1"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (MINIMAL.format(specialties=specialties(skip="math")), "models[0].specialties.math: is required"),
        (MINIMAL.format(specialties=specialties()) + "colour = 'red'\n", "models[0].colour: unknown key"),
        (
            MINIMAL.format(specialties=specialties()).replace('provider = "local"', 'provider = "elsewhere"'),
            "models[0].provider: unknown provider 'elsewhere'",
        ),
        (
            MINIMAL.format(specialties=specialties()).replace("max_output_tokens = 200", "max_output_tokens = 5000"),
            "models[0].max_output_tokens: must be between 1 and 1000",
        ),
        (
            MINIMAL.format(specialties=specialties().replace("score = 0.5", "score = 1.5", 1)),
            "models[0].specialties.coding.score: must be between 0 and 1",
        ),
        ("[[models]\n", "invalid TOML"),
    ],
)
def test_bad_catalogue_is_rejected_naming_the_key(
    make_settings: Callable[..., Settings], write_file: Callable[..., Path], text: str, expected: str
) -> None:
    path = write_file(text)
    with pytest.raises(ConfigError) as info:
        load_catalogue(make_settings(ORX_CATALOGUE=str(path)))
    assert str(path) in str(info.value)
    assert expected in str(info.value)
