"""Settings as sections: each parsed by itself, a command parsing only those it uses, defaults in agreement."""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.state import GatewayOptions
from orchestratex.config import (
    SECTIONS,
    CommonSettings,
    GatewaySettings,
    ModelLimit,
    OrchestratorSettings,
    ProvidersSettings,
    ResilienceSettings,
    SectionNotParsed,
    SelectorSettings,
    Settings,
    UpstreamTimeouts,
)
from orchestratex.errors import ConfigError
from services.cli import sections_of
from services.providers.openrouter import OpenRouterConfig
from services.providers.resilience import LimitOverride, ResilienceConfig, config_from_settings
from tests.core.serving import lines_until
from tests.ports import free_port

BIN = Path(sys.executable).parent
BAD_SELECTOR = {"ORX_SELECTOR_SEED": "lucky"}


def test_parsed_defaults_are_the_composed_defaults() -> None:
    assert Settings.from_env({}) == Settings()
    assert Settings.from_env({}).parsed == SECTIONS


def test_sections_are_frozen() -> None:
    settings = Settings.from_env({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.selector.exploration = 2.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.common = CommonSettings()  # type: ignore[misc]


def test_each_variable_lands_in_its_section(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "ORX_DATA_DIR": str(tmp_path),
            "ORX_LOG_FORMAT": "TEXT",
            "ORX_MONGODB_URI": "mongodb://u:p@db/",
            "ORX_EXPLORATION": "0",
            "ORX_SELECTOR_SEED": "7",
            "ORX_PROVIDER_MODE": "live",
            "ORX_IDLE_TIMEOUT": "4",
            "ORX_PROVIDER_MODEL_LIMITS": "a/b=5/2",
            "ORX_ORCHESTRATOR_LEASE_TTL": "3",
            "ORX_ORCHESTRATOR_CHANGE_FEED": "off",
            "ORX_GATEWAY_RATE_LIMIT": "0",
            "ORX_GATEWAY_ALLOWED_HOSTS": "Orx.Example.com:443",
            "ORX_RESTART_MAX_FAILURES": "2",
        }
    )
    assert settings.common.data_dir == tmp_path and settings.common.log_format == "text"
    assert settings.common.storage_backend == "mongodb" and settings.common.mongodb.uri.get() == "mongodb://u:p@db/"
    assert (settings.selector.exploration, settings.selector.seed) == (0.0, 7)
    assert settings.providers.mode == "live" and not settings.providers.simulated
    assert settings.providers.timeouts == UpstreamTimeouts(idle=4.0)
    assert settings.providers.resilience.model_limits == {"a/b": ModelLimit(rpm=5, concurrency=2)}
    assert settings.orchestrator.lease_ttl == 3.0 and not settings.orchestrator.change_feed
    assert Settings.from_env({}).orchestrator.change_feed
    assert (settings.gateway.rate_limit, settings.gateway.allowed_hosts) == (0.0, ("orx.example.com",))
    assert settings.restart.max_failures == 2
    assert Settings.from_env({}).common.log_format is None  # unset: services log JSON, `up` text on a terminal


def test_a_section_parses_alone_and_names_its_variable() -> None:
    assert SelectorSettings.from_env({"ORX_SELECTOR_HISTORY": "OFF"}) == SelectorSettings(use_history=False)
    with pytest.raises(ConfigError, match=r"^ORX_SELECTOR_SEED: "):
        SelectorSettings.from_env(BAD_SELECTOR)
    with pytest.raises(ConfigError, match=r"^ORX_GATEWAY_SEND_QUEUE: "):
        GatewaySettings.from_env({"ORX_GATEWAY_SEND_QUEUE": "0"})
    with pytest.raises(ConfigError, match=r"^ORX_ORCHESTRATOR_CHANGE_FEED: expected 1 or 0"):
        OrchestratorSettings.from_env({"ORX_ORCHESTRATOR_CHANGE_FEED": "sometimes"})
    with pytest.raises(ConfigError, match=r"^ORX_APP_URL: expected an http\(s\) URL"):
        ProvidersSettings.from_env({"ORX_APP_URL": "example.com"})


def test_only_the_chosen_sections_are_parsed() -> None:
    with pytest.raises(ConfigError, match=r"^ORX_SELECTOR_SEED: "):
        Settings.from_env(BAD_SELECTOR)
    with pytest.raises(ConfigError, match=r"^ORX_SELECTOR_SEED: "):
        Settings.from_env(BAD_SELECTOR, sections=("selector",))
    gateway = Settings.from_env(BAD_SELECTOR, sections=("gateway",))
    assert gateway.parsed == ("common", "gateway")
    assert gateway.gateway == GatewaySettings()
    with pytest.raises(SectionNotParsed, match=r"settings\.selector\.seed: the selector section was not parsed"):
        _ = gateway.selector.seed
    assert "not parsed" in repr(gateway)
    # common is always parsed: its variables are every process's.
    with pytest.raises(ConfigError, match=r"^ORX_RPC_TIMEOUT: "):
        Settings.from_env({"ORX_RPC_TIMEOUT": "soon"}, sections=())
    with pytest.raises(ValueError, match="unknown settings sections"):
        Settings.from_env({}, sections=("gateways",))  # type: ignore[arg-type]


def test_secrets_come_from_the_parsed_sections_only() -> None:
    env = {"OPENROUTER_API_KEY": "sk-or-v1-" + "k" * 20, "ORX_MONGODB_URI": "mongodb://u:p@db/"}
    assert [s.get() for s in Settings.from_env(env).secrets()] == ["mongodb://u:p@db/", env["OPENROUTER_API_KEY"]]
    assert [s.get() for s in Settings.from_env(env, sections=("gateway",)).secrets()] == ["mongodb://u:p@db/"]
    assert Settings.from_env({}).secrets() == []


@pytest.mark.parametrize(
    ("argv", "sections"),
    [
        (["up"], None),
        (["serve", "gateway"], ("gateway",)),
        (["serve", "selector"], ("selector",)),
        (["models", "sync"], ("providers",)),
        (["healthcheck", "selector"], ()),
        (["ask", "hi"], ()),
        (["backup", "/tmp/x"], ()),
    ],
)
def test_each_command_names_the_sections_it_uses(argv: list[str], sections: tuple[str, ...] | None) -> None:
    namespace = argparse.Namespace(command=argv[0], service=argv[1] if argv[0] in ("serve", "healthcheck") else None)
    assert sections_of(namespace) == sections


# ------------------------------------------------- the services' own configuration objects agree with the defaults


def test_the_providers_configuration_objects_keep_their_defaults() -> None:
    assert config_from_settings(ResilienceSettings()) == ResilienceConfig()
    assert OpenRouterConfig.from_settings(ProvidersSettings()) == OpenRouterConfig()


def test_resilience_settings_map_onto_the_policy() -> None:
    config = config_from_settings(
        ResilienceSettings.from_env(
            {
                "ORX_PROVIDER_MAX_ATTEMPTS": "4",
                "ORX_PROVIDER_AUTH_COOLDOWN": "0",
                "ORX_PROVIDER_BREAKER_COOLDOWN": "400",
                "ORX_PROVIDER_CONCURRENCY": "3",
                "ORX_PROVIDER_MODEL_LIMITS": "x/y=/2",
            }
        )
    )
    assert config.retry.max_attempts == 4 and config.holds.auth_cooldown == 0.0
    assert (config.breaker.cooldown, config.breaker.max_cooldown) == (400.0, 400.0)  # the cap follows
    assert config.limits.max_concurrent == 3 and config.limits.overrides == {"x/y": LimitOverride(None, 2)}


def test_gateway_options_come_from_the_gateway_section() -> None:
    assert GatewayOptions.from_settings(Settings()) == GatewayOptions()
    settings = Settings(gateway=GatewaySettings(send_queue=8, header_timeout=2.0, allowed_hosts=("a.example",)))
    options = GatewayOptions.from_settings(settings, body_timeout=1.0)
    assert (options.send_queue_size, options.header_timeout, options.allowed_hosts) == (8, 2.0, ("a.example",))
    assert options.body_timeout == 1.0


# ------------------------------------------------------------------------ through the command line


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "orchestratex"), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("command", [["serve", "selector"], ["up"]])
def test_a_bad_selector_variable_stops_the_commands_that_use_it(tmp_path: Path, command: list[str]) -> None:
    run = _run(command, {"ORX_DATA_DIR": str(tmp_path), **BAD_SELECTOR})
    assert run.returncode == 2
    assert run.stderr.strip() == "orchestratex: configuration error: ORX_SELECTOR_SEED: expected a number, got 'lucky'"
    assert run.stdout == ""


def test_a_bad_selector_variable_does_not_stop_the_gateway(tmp_path: Path) -> None:
    env = {
        **os.environ,
        **BAD_SELECTOR,
        "ORX_DATA_DIR": str(tmp_path),
        "ORX_GATEWAY_LISTEN": f"127.0.0.1:{free_port()}",
        "ORX_LOG_FORMAT": "text",
    }
    lines = lines_until(["serve", "gateway"], env, "gateway listening on")
    assert any("gateway listening on" in line for line in lines), lines
