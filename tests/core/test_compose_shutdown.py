"""docker-compose.yml stops the suite as `orchestratex up` does: the gateway first, then the orchestrator with
time to drain its running sessions (``ORX_SHUTDOWN_GRACE``) before the services those sessions call."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from services.launcher import STOP_MARGIN

ROOT = Path(__file__).resolve().parents[2]


def _services() -> dict[str, Any]:
    text = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", (ROOT / "docker-compose.yml").read_text())
    services: dict[str, Any] = yaml.safe_load(text)["services"]
    return services


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)s", duration)
    assert match is not None, f"expected a duration in seconds, got {duration!r}"
    return float(match.group(1))


def test_the_orchestrator_is_given_its_grace_period_and_the_margin() -> None:
    orchestrator = _services()["orchestrator"]
    grace = float(orchestrator["environment"]["ORX_SHUTDOWN_GRACE"])
    assert grace >= 10
    assert _seconds(orchestrator["stop_grace_period"]) >= grace + STOP_MARGIN


def test_the_gateway_stops_before_the_orchestrator_and_the_orchestrator_before_its_peers() -> None:
    """Compose stops a service before those it depends on."""
    services = _services()
    assert "orchestrator" in services["gateway"]["depends_on"]
    assert {"providers", "selector", "analytics"} <= set(services["orchestrator"]["depends_on"])
    for peer in ("providers", "selector", "analytics"):
        assert "orchestrator" not in services[peer].get("depends_on", {})
