"""Settings: defaults, validation naming the variable, secrets that never print."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestratex.config import Secret, Settings
from orchestratex.errors import ConfigError


def test_defaults_bind_loopback_with_the_documented_ports() -> None:
    s = Settings.from_env({})
    assert {k: (str(v)) for k, v in s.listen.items()} == {
        "selector": "127.0.0.1:50051",
        "providers": "127.0.0.1:50052",
        "orchestrator": "127.0.0.1:50053",
        "analytics": "127.0.0.1:50054",
        "gateway": "127.0.0.1:8080",
    }
    assert s.peers["orchestrator"] == "127.0.0.1:50053"
    assert s.data_dir == Path("./var")
    assert s.simulated and s.storage_backend == "sqlite"


def test_peers_follow_a_wildcard_listen_address_to_loopback() -> None:
    s = Settings.from_env({"ORX_SELECTOR_LISTEN": "0.0.0.0:6000", "ORX_PROVIDERS_ADDR": "providers:50052"})
    assert s.peers["selector"] == "127.0.0.1:6000"
    assert s.peers["providers"] == "providers:50052"


@pytest.mark.parametrize(
    ("env", "var"),
    [
        ({"ORX_SELECTOR_LISTEN": "nonsense"}, "ORX_SELECTOR_LISTEN"),
        ({"ORX_GATEWAY_LISTEN": "127.0.0.1:99999"}, "ORX_GATEWAY_LISTEN"),
        ({"ORX_ANALYTICS_ADDR": "host:port"}, "ORX_ANALYTICS_ADDR"),
        ({"ORX_LOG_LEVEL": "LOUD"}, "ORX_LOG_LEVEL"),
        ({"ORX_SHUTDOWN_GRACE": "-1"}, "ORX_SHUTDOWN_GRACE"),
        ({"ORX_EVENT_LOOP": "trio"}, "ORX_EVENT_LOOP"),
        ({"ORX_RPC_TIMEOUT": "soon"}, "ORX_RPC_TIMEOUT"),
        ({"ORX_PROVIDER_MODE": "maybe"}, "ORX_PROVIDER_MODE"),
        ({"ORX_OPENROUTER_BASE_URL": "ftp://x"}, "ORX_OPENROUTER_BASE_URL"),
        ({"ORX_SIM_PROFILE": "/no/such/file.toml"}, "ORX_SIM_PROFILE"),
        ({"ORX_OPENROUTER_API_KEY_FILE": "/no/such/key"}, "ORX_OPENROUTER_API_KEY_FILE"),
    ],
)
def test_errors_name_the_variable(env: dict[str, str], var: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env(env)
    assert str(err.value).startswith(var + ":")


def test_key_file_and_secret_hiding(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("sk-or-v1-supersecret\n")
    s = Settings.from_env({"ORX_OPENROUTER_API_KEY_FILE": str(key)})
    assert s.openrouter_api_key.get() == "sk-or-v1-supersecret"
    assert not s.simulated
    assert "supersecret" not in repr(s) and "supersecret" not in str(s.openrouter_api_key)
    assert "supersecret" not in f"{s.openrouter_api_key}"
    forced = Settings.from_env({"OPENROUTER_API_KEY": "k" * 20, "ORX_PROVIDER_MODE": "simulated"})
    assert forced.simulated
    assert Secret("a") == Secret("a") and Secret("a") != Secret("b")
