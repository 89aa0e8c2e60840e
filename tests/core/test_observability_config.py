"""The observability files (deploy/observability/, the compose profile) agree with each other and with the code.

Prometheus's own `promtool` is not on the registries, so the PromQL of the alert rules and the dashboard is
parsed with promql-parser (the Rust parser Prometheus-compatible engines use) and every metric it names is
looked up among the metrics the code registers. No Docker engine runs on the build machines: the compose
profile is read, not started.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
OBS = ROOT / "deploy" / "observability"
DASHBOARD = OBS / "grafana" / "dashboards" / "orchestratex.json"
DATASOURCES = OBS / "grafana" / "provisioning" / "datasources" / "orchestratex.yml"
DASHBOARD_PROVIDERS = OBS / "grafana" / "provisioning" / "dashboards" / "orchestratex.yml"

DEFAULT_STACK = {"mongo", "selector", "providers", "orchestrator", "analytics", "gateway"}
PROFILE = "observability"
PROFILE_SERVICES = {"prometheus", "grafana", "jaeger"}
METRICS_MODULES = (
    "orchestratex.metrics",
    "services.providers.metrics",
    "services.orchestrator.metrics",
    "services.analytics.metrics",
    "gateway.metrics",
)
# Written by prometheus_client's ProcessCollector on Linux; listed so the check does not depend on the platform.
PROCESS_METRICS = {
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
}
# Series Prometheus itself writes for every scrape target.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
SEVERITIES = {"warning", "critical"}
# Grafana's built-in interval variables, and the dashboard's own variables, as PromQL can read them.
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "$model": ".*",
}
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}


# ---------------------------------------------------------------------------------------------- loading


def _yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), path
    return data


def _compose() -> dict[str, Any]:
    return _yaml(ROOT / "docker-compose.yml")


def _dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _dashboard_exprs() -> list[str]:
    return [
        target["expr"]
        for panel in _panels(_dashboard()["panels"])
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def _rules() -> list[dict[str, Any]]:
    return [rule for group in _yaml(OBS / "alerts.yml")["groups"] for rule in group["rules"]]


def _alerts() -> list[dict[str, Any]]:
    return [rule for rule in _rules() if "alert" in rule]


def _grafana_to_promql(expr: str) -> str:
    """Replace the Grafana variables a query uses with values PromQL accepts."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace("${" + variable[1:] + "}", value).replace(variable, value)
    assert "$" not in expr, f"a Grafana variable this test does not know: {expr}"
    return expr


def _metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (by name or by a `__name__` matcher)."""
    names: set[str] = set()

    def visit(node: promql_parser.Expr) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
            for matcher in node.matchers.matchers:
                if matcher.name == "__name__":
                    names.add(matcher.value)
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def _scrape_targets() -> dict[str, list[str]]:
    """prometheus.yml's targets by job."""
    jobs = _yaml(OBS / "prometheus.yml")["scrape_configs"]
    return {job["job_name"]: [t for config in job["static_configs"] for t in config["targets"]] for job in jobs}


def _metrics_listen(service: dict[str, Any], name: str) -> str | None:
    value = service.get("environment", {}).get(f"ORX_{name.upper()}_METRICS_LISTEN")
    return None if value is None else str(value)


def _code_metric_names() -> set[str]:
    """Every series name the code can expose: its metric families on the default registry, expanded the way the
    text format writes them (a counter `x` as `x_total`, a histogram as `x_bucket`, `x_sum`, `x_count`)."""
    for module in METRICS_MODULES:
        importlib.import_module(module)
    names = set(PROCESS_METRICS)
    for family in REGISTRY.collect():
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


# ---------------------------------------------------------------------------------------------- compose


def test_the_default_stack_is_unchanged_and_the_rest_is_behind_the_profile() -> None:
    services = _compose()["services"]
    default = {name for name, svc in services.items() if not svc.get("profiles")}
    assert default == DEFAULT_STACK
    profiled = {name: svc["profiles"] for name, svc in services.items() if svc.get("profiles")}
    assert profiled == {name: [PROFILE] for name in PROFILE_SERVICES}
    for name in DEFAULT_STACK:
        # Depending on a profiled service would start it (or fail) without the profile.
        assert not set(services[name].get("depends_on", {})) & PROFILE_SERVICES, name


def test_profile_images_are_pinned_and_ports_stay_on_loopback() -> None:
    services = _compose()["services"]
    for name in PROFILE_SERVICES:
        image = services[name]["image"]
        tag = image.rpartition(":")[2]
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: pin a release tag, not {image!r}"
        for port in services[name].get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond the host's loopback"


def test_tracing_is_off_unless_the_shell_turns_it_on() -> None:
    # Compose cannot condition variables on a profile: the endpoint comes from the shell, empty by default.
    for name in DEFAULT_STACK - {"mongo"}:
        env = _compose()["services"][name]["environment"]
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "${OTEL_EXPORTER_OTLP_ENDPOINT:-}", name


def test_the_profile_mounts_the_committed_files() -> None:
    services = _compose()["services"]
    mounts = [str(volume).split(":")[0] for name in PROFILE_SERVICES for volume in services[name].get("volumes", [])]
    sources = {m for m in mounts if m.startswith("./")}
    assert sources == {
        "./deploy/observability/prometheus.yml",
        "./deploy/observability/alerts.yml",
        "./deploy/observability/grafana/provisioning/datasources",
        "./deploy/observability/grafana/provisioning/dashboards",
        "./deploy/observability/grafana/dashboards",
    }
    for source in sources:
        assert (ROOT / source).exists(), source
    prometheus = _yaml(OBS / "prometheus.yml")
    assert prometheus["rule_files"] == ["/etc/prometheus/alerts.yml"]
    assert any(
        str(v) == "./deploy/observability/alerts.yml:/etc/prometheus/alerts.yml:ro"
        for v in services["prometheus"]["volumes"]
    )
    dashboards = _yaml(DASHBOARD_PROVIDERS)["providers"]
    assert [p["options"]["path"] for p in dashboards] == ["/etc/grafana/dashboards"]
    assert any(str(v).endswith(":/etc/grafana/dashboards:ro") for v in services["grafana"]["volumes"])


# ---------------------------------------------------------------------------------------------- scraping


def test_every_scrape_target_is_a_compose_service_metrics_port() -> None:
    services = _compose()["services"]
    for job, targets in _scrape_targets().items():
        assert targets, job
        for target in targets:
            host, _, port = target.rpartition(":")
            assert host in services, f"{target}: no compose service {host!r}"
            listen = _metrics_listen(services[host], host)
            assert listen is not None, f"{target}: {host} sets no ORX_{host.upper()}_METRICS_LISTEN"
            assert listen.rpartition(":")[2] == port, f"{target}: {host} serves metrics on {listen}"
            assert job == host, "the job is named after its service (dashboards and alerts use it)"


def test_every_metrics_enabled_service_is_scraped() -> None:
    enabled = set()
    for name, svc in _compose()["services"].items():
        listen = _metrics_listen(svc, name)
        if listen is not None:
            enabled.add(f"{name}:{listen.rpartition(':')[2]}")
    assert enabled == {"selector:9451", "providers:9452", "orchestrator:9453", "analytics:9454", "gateway:9480"}
    assert {t for targets in _scrape_targets().values() for t in targets} == enabled


# ---------------------------------------------------------------------------------------------- rules


def test_the_rules_file_has_the_structure_prometheus_loads() -> None:
    groups = _yaml(OBS / "alerts.yml")["groups"]
    assert len({g["name"] for g in groups}) == len(groups)
    alerts = _alerts()
    assert len({a["alert"] for a in alerts}) == len(alerts)
    for rule in _rules():
        assert ("alert" in rule) != ("record" in rule), rule
        if "record" in rule:
            assert set(rule) == {"record", "expr"}, rule
            assert ":" in rule["record"], "recording rules are named level:metric:operations"
    for alert in alerts:
        name = alert["alert"]
        assert set(alert) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}, name
        assert re.fullmatch(r"Orx[A-Z][A-Za-z]+", name), name
        assert promql_parser.parse_duration(alert["for"]).total_seconds() >= 60, name
        assert alert["labels"]["severity"] in SEVERITIES, name
        assert alert["annotations"]["summary"].strip(), name
        assert alert["annotations"]["description"].strip(), name


def test_the_alerts_cover_what_operators_watch() -> None:
    alerts = {a["alert"]: a["expr"] for a in _alerts()}
    watched = {
        "provider error rate": "orx_provider_calls_total",
        "time to first token": "orx_provider_time_to_first_token_seconds_bucket",
        "cost per hour": "orx_provider_cost_usd_total",
        "sessions stuck": "orx_orchestrator_sessions_running",
        "breaker open": "orx_provider_breaker_state",
        "outbox backlog": "orx_orchestrator_outbox_backlog_events",
        "event-loop lag": "orx_event_loop_lag_seconds_bucket",
        "target down": "up",
    }
    for what, metric in watched.items():
        assert any(metric in _metric_names(expr) for expr in alerts.values()), f"no alert on {what} ({metric})"


@pytest.mark.parametrize("rule", _rules(), ids=lambda r: r.get("alert") or r.get("record"))
def test_every_rule_expression_parses(rule: dict[str, Any]) -> None:
    promql_parser.parse(rule["expr"])


def test_a_broken_expression_does_not_parse() -> None:
    # The parser is strict enough for the checks above to mean something.
    with pytest.raises(ValueError):
        promql_parser.parse("sum by (model) (rate(orx_provider_calls_total[5m])")
    with pytest.raises(ValueError):
        promql_parser.parse(_grafana_to_promql("rate(orx_provider_calls_total[$__rate_interval]) >"))


# ---------------------------------------------------------------------------------------------- dashboard


def test_the_dashboard_uses_the_provisioned_datasource() -> None:
    datasources = _yaml(DATASOURCES)["datasources"]
    prometheus = [d for d in datasources if d["type"] == "prometheus"]
    assert len(prometheus) == 1 and prometheus[0]["url"] == "http://prometheus:9090"
    uid = prometheus[0]["uid"]
    dashboard = _dashboard()
    assert dashboard["uid"] and dashboard["schemaVersion"] >= 41
    panels = list(_panels(dashboard["panels"]))
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
    for variable in dashboard["templating"]["list"]:
        assert variable["datasource"] == {"type": "prometheus", "uid": uid}, variable["name"]


def test_the_dashboard_has_the_rows_operators_look_for() -> None:
    rows = [p["title"] for p in _dashboard()["panels"] if p["type"] == "row"]
    assert rows == ["Traffic & errors (gRPC)", "Providers", "Orchestrator", "Gateway", "Analytics", "Process"]


def test_every_dashboard_expression_parses() -> None:
    exprs = _dashboard_exprs()
    assert len(exprs) >= 30
    for expr in exprs:
        promql_parser.parse(_grafana_to_promql(expr))


# ---------------------------------------------------------------------------------------------- names


def test_every_metric_named_in_rules_and_dashboard_is_defined_in_the_code() -> None:
    defined = _code_metric_names() | PROMETHEUS_SERIES
    recorded = {rule["record"] for rule in _rules() if "record" in rule}
    used: dict[str, set[str]] = {}
    for rule in _rules():
        for name in _metric_names(rule["expr"]):
            used.setdefault(name, set()).add(f"alerts.yml {rule.get('alert') or rule.get('record')}")
    for expr in _dashboard_exprs():
        for name in _metric_names(_grafana_to_promql(expr)):
            used.setdefault(name, set()).add("dashboard")
    for variable in _dashboard()["templating"]["list"]:
        match = re.fullmatch(r"label_values\((\w+), *\w+\)", variable["query"]["query"])
        assert match, variable["name"]
        used.setdefault(match.group(1), set()).add(f"dashboard variable {variable['name']}")
    unknown = {name: where for name, where in used.items() if name not in defined | recorded}
    assert not unknown, f"metric names the code does not define: {unknown}"
    assert len(used) >= 30


def test_the_name_check_catches_a_misspelt_metric() -> None:
    defined = _code_metric_names()
    assert "orx_provider_calls_total" in defined and "orx_provider_time_to_first_token_seconds_bucket" in defined
    assert "orx_provider_calls" not in defined  # a counter is queried with its _total
    assert not _metric_names("rate(orx_provider_call_total[5m])") <= defined


def test_operations_md_documents_every_metric_the_code_defines() -> None:
    """docs/operations.md is the operator's list: a metric added in code without a line there fails here."""
    doc = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    for module in METRICS_MODULES:
        importlib.import_module(module)
    defined = {family.name for family in REGISTRY.collect() if family.name.startswith("orx_")}
    assert len(defined) > 40
    assert sorted(name for name in defined if f"`{name}" not in doc) == []
