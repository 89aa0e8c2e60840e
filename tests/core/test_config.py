"""Settings: defaults, validation naming the variable, secrets that never print."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestratex.config import RestartPolicy, Secret, Settings
from orchestratex.errors import ConfigError


def test_defaults_bind_loopback_with_the_documented_ports() -> None:
    s = Settings.from_env({})
    assert {k: (str(v)) for k, v in s.common.listen.items()} == {
        "selector": "127.0.0.1:50051",
        "providers": "127.0.0.1:50052",
        "orchestrator": "127.0.0.1:50053",
        "analytics": "127.0.0.1:50054",
        "gateway": "127.0.0.1:8080",
    }
    assert s.common.peers["orchestrator"] == "127.0.0.1:50053"
    assert s.common.data_dir == Path("./var")
    assert s.providers.simulated and s.common.storage_backend == "sqlite"


def test_peers_follow_a_wildcard_listen_address_to_loopback() -> None:
    s = Settings.from_env({"ORX_SELECTOR_LISTEN": "0.0.0.0:6000", "ORX_PROVIDERS_ADDR": "providers:50052"})
    assert s.common.peers["selector"] == "127.0.0.1:6000"
    assert s.common.peers["providers"] == "providers:50052"


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
        ({"ORX_MONGODB_URI_FILE": "/no/such/uri"}, "ORX_MONGODB_URI_FILE"),
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
    assert s.providers.openrouter_api_key.get() == "sk-or-v1-supersecret"
    assert not s.providers.simulated
    assert "supersecret" not in repr(s) and "supersecret" not in str(s.providers.openrouter_api_key)
    assert "supersecret" not in f"{s.providers.openrouter_api_key}"
    forced = Settings.from_env({"OPENROUTER_API_KEY": "k" * 20, "ORX_PROVIDER_MODE": "simulated"})
    assert forced.providers.simulated
    assert Secret("a") == Secret("a") and Secret("a") != Secret("b")


MONGODB_URI = "mongodb://orx:hunter2-supersecret@db-0.mongo:27017/?replicaSet=rs0"


def test_mongodb_uri_file_is_read_and_trimmed(tmp_path: Path) -> None:
    uri_file = tmp_path / "uri"
    uri_file.write_text(f"  {MONGODB_URI}\r\n\n")
    s = Settings.from_env({"ORX_MONGODB_URI_FILE": str(uri_file)})
    assert s.common.mongodb.uri.get() == MONGODB_URI
    assert s.common.storage_backend == "mongodb"
    assert s.common.mongodb.uri in s.secrets()
    assert "supersecret" not in repr(s) and "supersecret" not in f"{s.common.mongodb.uri}"
    # An empty file (an empty Secret) is no URI: SQLite, as with ORX_MONGODB_URI unset.
    uri_file.write_text("\n")
    assert Settings.from_env({"ORX_MONGODB_URI_FILE": str(uri_file)}).common.storage_backend == "sqlite"


@pytest.mark.parametrize("content", [MONGODB_URI, ""])
def test_mongodb_uri_and_its_file_together_are_refused(tmp_path: Path, content: str) -> None:
    uri_file = tmp_path / "uri"
    uri_file.write_text(content)
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"ORX_MONGODB_URI": MONGODB_URI, "ORX_MONGODB_URI_FILE": str(uri_file)})
    message = str(err.value)
    assert message.startswith("ORX_MONGODB_URI_FILE:") and "ORX_MONGODB_URI," in message
    assert "supersecret" not in message and "db-0" not in message


def test_mongodb_uri_file_errors_name_the_path_never_the_content(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"ORX_MONGODB_URI_FILE": str(missing)})
    assert str(err.value) == f"ORX_MONGODB_URI_FILE: cannot read {str(missing)!r} (No such file or directory)"
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"ORX_MONGODB_URI_FILE": str(tmp_path)})
    assert str(err.value).startswith(f"ORX_MONGODB_URI_FILE: cannot read {str(tmp_path)!r} (")
    binary = tmp_path / "binary"
    binary.write_bytes(MONGODB_URI.encode() + b"\xff\xfe")
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"ORX_MONGODB_URI_FILE": str(binary)})
    message = str(err.value)
    assert message == f"ORX_MONGODB_URI_FILE: {str(binary)!r} is not UTF-8 text"
    assert "supersecret" not in message and "\\x" not in message


def test_provider_peers_is_an_optional_dns_name() -> None:
    default = Settings.from_env({}).providers.resilience
    assert (default.peers, default.peers_interval) == ("", 10.0)
    for value, name in [
        ("providers", "providers"),
        (" Providers. ", "providers"),
        ("orx-providers.orchestratex.svc.cluster.local", "orx-providers.orchestratex.svc.cluster.local"),
    ]:
        assert Settings.from_env({"ORX_PROVIDER_PEERS": value}).providers.resilience.peers == name
    custom = Settings.from_env({"ORX_PROVIDER_PEERS": "providers", "ORX_PROVIDER_PEERS_INTERVAL": "2.5"})
    assert custom.providers.resilience.peers_interval == 2.5
    assert custom.providers.resilience.per_worker(2).peers == "providers"


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("ORX_PROVIDER_PEERS", "providers:50052"),
        ("ORX_PROVIDER_PEERS", "dns:///providers:50052"),
        ("ORX_PROVIDER_PEERS", "http://providers"),
        ("ORX_PROVIDER_PEERS", "providers..svc"),
        ("ORX_PROVIDER_PEERS", "-providers"),
        ("ORX_PROVIDER_PEERS", "pro viders"),
        ("ORX_PROVIDER_PEERS", "a" * 64),
        ("ORX_PROVIDER_PEERS", ".".join(["abcdefghij"] * 24)),
        ("ORX_PROVIDER_PEERS_INTERVAL", "0.5"),
        ("ORX_PROVIDER_PEERS_INTERVAL", "often"),
        ("ORX_PROVIDER_PEERS_INTERVAL", "3601"),
    ],
)
def test_bad_provider_peers_name_the_variable(var: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env({var: value})
    assert str(err.value).startswith(var + ":")
    if var == "ORX_PROVIDER_PEERS":
        assert "headless Service" in str(err.value)


def test_restart_policy_defaults_and_overrides() -> None:
    assert Settings.from_env({}).restart == RestartPolicy(
        delay=0.5, max_delay=30, reset_after=30, max_failures=5, window=60
    )
    custom = Settings.from_env(
        {
            "ORX_RESTART_DELAY": "0.1",
            "ORX_RESTART_MAX_DELAY": "2",
            "ORX_RESTART_RESET_AFTER": "10",
            "ORX_RESTART_MAX_FAILURES": "3",
            "ORX_RESTART_WINDOW": "20",
        }
    ).restart
    assert custom == RestartPolicy(delay=0.1, max_delay=2, reset_after=10, max_failures=3, window=20)
    assert [custom.backoff(n) for n in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.6, 2]


@pytest.mark.parametrize(
    ("env", "var"),
    [
        ({"ORX_RESTART_DELAY": "-1"}, "ORX_RESTART_DELAY"),
        ({"ORX_RESTART_MAX_FAILURES": "0"}, "ORX_RESTART_MAX_FAILURES"),
        ({"ORX_RESTART_MAX_FAILURES": "2.5"}, "ORX_RESTART_MAX_FAILURES"),
        ({"ORX_RESTART_WINDOW": "never"}, "ORX_RESTART_WINDOW"),
        ({"ORX_GRPC_ALLOW_NON_LOOPBACK": "maybe"}, "ORX_GRPC_ALLOW_NON_LOOPBACK"),
    ],
)
def test_new_settings_name_the_variable(env: dict[str, str], var: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env(env)
    assert str(err.value).startswith(var + ":")


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost", "LOCALHOST"])
def test_loopback_listen_addresses_need_no_opt_in(host: str) -> None:
    settings = Settings.from_env({"ORX_SELECTOR_LISTEN": f"{host}:0"})
    settings.common.check_grpc_exposure("selector")


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "[::]", "10.0.0.7", "192.168.1.2", "selector", "example.com"])
def test_grpc_listen_beyond_loopback_needs_the_opt_in(host: str) -> None:
    env = {"ORX_PROVIDERS_LISTEN": f"{host}:50052"}
    with pytest.raises(ConfigError) as err:
        Settings.from_env(env).common.check_grpc_exposure("providers")
    message = str(err.value)
    assert message.startswith("ORX_PROVIDERS_LISTEN: ") and "\n" not in message
    assert repr(host) in message and "ORX_GRPC_ALLOW_NON_LOOPBACK=1" in message and "x-orx-tenant" in message
    for yes in ("1", "true", "yes", "on", "TRUE"):
        Settings.from_env({**env, "ORX_GRPC_ALLOW_NON_LOOPBACK": yes}).common.check_grpc_exposure("providers")
    for no in ("0", "false", "no", "off", ""):
        with pytest.raises(ConfigError):
            Settings.from_env({**env, "ORX_GRPC_ALLOW_NON_LOOPBACK": no}).common.check_grpc_exposure("providers")


def test_the_data_dir_is_created_and_checked_for_writing(tmp_path: Path) -> None:
    fresh = tmp_path / "a" / "b"
    Settings.from_env({"ORX_DATA_DIR": str(fresh)}).common.check_data_dir()
    assert fresh.is_dir() and list(fresh.iterdir()) == []  # the probe file is gone again


def test_a_data_dir_that_is_a_file_or_under_one_names_the_variable(tmp_path: Path) -> None:
    file = tmp_path / "file"
    file.write_text("")
    with pytest.raises(ConfigError, match=r"^ORX_DATA_DIR=.*/file: not a directory$"):
        Settings.from_env({"ORX_DATA_DIR": str(file)}).common.check_data_dir()
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"ORX_DATA_DIR": str(file / "data")}).common.check_data_dir()
    assert str(err.value) == f"ORX_DATA_DIR={file / 'data'}: cannot create (Not a directory)"


def test_a_relative_data_dir_is_reported_as_an_absolute_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "file").write_text("")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"ORX_DATA_DIR": "file/var"}).common.check_data_dir()
    assert str(err.value).startswith(f"ORX_DATA_DIR={tmp_path / 'file' / 'var'}: ")
