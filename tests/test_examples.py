"""The example compose stack in examples/ is wired consistently and its configs are valid.

No container engine (nor `docker compose`) runs in CI, so the stack is checked
statically: Prometheus' config with promtool, Alertmanager's structurally (a
real Alertmanager runs its inhibit rules in tests/test_alertmanager.py), and
the compose file's cross references (service names, ports, mounted host
paths, container paths) with PyYAML.
"""

from __future__ import annotations

import fnmatch
import glob
import posixpath
import re
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from tests.promtool import run_promtool

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
COMPOSE = EXAMPLES / "docker-compose.yml"
PROMETHEUS_CONFIG = EXAMPLES / "prometheus" / "prometheus.yml"
ALERTMANAGER_CONFIG = EXAMPLES / "alertmanager" / "alertmanager.yml"
ALERTMANAGER_PORT = 9093  # Alertmanager's default --web.listen-address
PROMETHEUS_PORT = 9090


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = load(COMPOSE)
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = compose["services"]
    assert set(services) == {"exporter", "prometheus", "alertmanager", "grafana"}
    return services


def flag(command: list[str], name: str) -> str:
    values = [arg.split("=", 1)[1] for arg in command if arg.startswith(f"{name}=")]
    assert len(values) == 1, f"expected one {name}=... in {command}"
    return values[0]


# --- bind mounts ----------------------------------------------------------------


def bind_mounts(service: dict[str, Any]) -> list[tuple[Path, PurePosixPath]]:
    """(host path, container path) of each bind mount; named volumes are left out."""
    mounts = []
    for volume in service.get("volumes", []):
        assert isinstance(volume, str), f"use the short volume syntax: {volume}"
        source, target, *_ = volume.split(":")
        if source.startswith((".", "/")):
            mounts.append(((EXAMPLES / source).resolve(), PurePosixPath(target)))
    return mounts


def to_host(container_path: str, mounts: list[tuple[Path, PurePosixPath]]) -> Path:
    """Where a path seen inside the container lives in the repository."""
    path = PurePosixPath(container_path)
    best: tuple[Path, PurePosixPath] | None = None
    for host, target in mounts:
        if (path == target or target in path.parents) and (
            best is None or len(target.parts) > len(best[1].parts)
        ):
            best = (host, target)
    assert best is not None, f"{container_path} is not inside any bind mount"
    host, target = best
    return host.joinpath(*path.relative_to(target).parts)


def test_every_mounted_host_path_exists(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for host, target in bind_mounts(service):
            assert host.exists(), f"{name}: mounts {host} at {target}, which does not exist"
            assert REPO in host.parents, f"{name}: {host} is outside the repository"


def test_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"named volume {source} is not declared"


def test_to_host_maps_the_longest_mount() -> None:
    mounts = [(Path("/r/a"), PurePosixPath("/etc/x")), (Path("/r/b"), PurePosixPath("/etc/x/y"))]
    assert to_host("/etc/x/y/z.yml", mounts) == Path("/r/b/z.yml")
    assert to_host("/etc/x/z.yml", mounts) == Path("/r/a/z.yml")
    with pytest.raises(AssertionError):
        to_host("/etc/other", mounts)


# --- service wiring -------------------------------------------------------------


def test_exporter_is_built_from_the_repository_in_demo_mode(
    services: dict[str, dict[str, Any]],
) -> None:
    exporter = services["exporter"]
    context = (EXAMPLES / exporter["build"]["context"]).resolve()
    assert context == REPO
    assert (context / "Dockerfile").is_file()
    command = exporter["command"]
    assert "--demo" in command
    assert flag(command, "--web.listen-address") == ":10180"


def test_exporter_command_is_accepted_by_the_cli(services: dict[str, dict[str, Any]]) -> None:
    from exporter.cli import build_parser

    parsed = build_parser().parse_args(services["exporter"]["command"])
    assert parsed.demo is True
    assert parsed.web_listen_address == ":10180"


def test_depends_on_names_real_services(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for dependency in service.get("depends_on", []):
            assert dependency in services, f"{name} depends on unknown service {dependency}"
    assert set(services["prometheus"]["depends_on"]) == {"exporter", "alertmanager"}


def test_published_ports_are_loopback_only(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on all addresses"


@pytest.fixture(scope="module")
def prometheus_config() -> dict[str, Any]:
    data: dict[str, Any] = load(PROMETHEUS_CONFIG)
    return data


def static_targets(config: dict[str, Any], job: str) -> list[str]:
    jobs = [j for j in config["scrape_configs"] if j["job_name"] == job]
    assert len(jobs) == 1, f"expected one scrape job {job}"
    return [t for sc in jobs[0]["static_configs"] for t in sc["targets"]]


def test_prometheus_scrapes_the_exporter_service(
    services: dict[str, dict[str, Any]], prometheus_config: dict[str, Any]
) -> None:
    port = flag(services["exporter"]["command"], "--web.listen-address").rsplit(":", 1)[1]
    assert static_targets(prometheus_config, "token-health-exporter") == [f"exporter:{port}"]
    # The published port is the port the exporter listens on.
    assert f"127.0.0.1:{port}:{port}" in services["exporter"]["ports"]


def test_scrape_job_is_the_one_the_alerts_select(prometheus_config: dict[str, Any]) -> None:
    groups = yaml.safe_load((REPO / "alerts" / "token-health.rules.yml").read_text())["groups"]
    exprs = " ".join(rule["expr"] for group in groups for rule in group["rules"])
    jobs = set(re.findall(r'\bjob\s*=\s*"([^"]+)"', exprs))
    assert jobs, "the alert rules select no job; this check has nothing to compare"
    assert jobs == {"token-health-exporter"}
    assert static_targets(prometheus_config, "token-health-exporter")


def test_prometheus_alerts_to_the_alertmanager_service(
    services: dict[str, dict[str, Any]], prometheus_config: dict[str, Any]
) -> None:
    managers = prometheus_config["alerting"]["alertmanagers"]
    targets = [t for m in managers for sc in m["static_configs"] for t in sc["targets"]]
    assert targets == [f"alertmanager:{ALERTMANAGER_PORT}"]
    assert f"127.0.0.1:{ALERTMANAGER_PORT}:{ALERTMANAGER_PORT}" in services["alertmanager"]["ports"]


def test_prometheus_container_paths_resolve_to_repository_files(
    services: dict[str, dict[str, Any]], prometheus_config: dict[str, Any]
) -> None:
    prometheus = services["prometheus"]
    mounts = bind_mounts(prometheus)
    config_in_container = PurePosixPath(flag(prometheus["command"], "--config.file"))
    assert to_host(str(config_in_container), mounts) == PROMETHEUS_CONFIG
    # Prometheus resolves rule_files against the config file's directory; in the
    # container that directory is a mount, so map each pattern through the
    # mounts and require it to select the same files as in the checkout.
    rule_patterns = prometheus_config["rule_files"]
    assert rule_patterns, "no rule_files: the stack would evaluate no alerts"
    for pattern in rule_patterns:
        in_repo = sorted(glob.glob(str(PROMETHEUS_CONFIG.parent / pattern)))
        container_pattern = str(config_in_container.parent / pattern)
        normalised = PurePosixPath(posixpath.normpath(container_pattern))
        host_dir = to_host(str(normalised.parent), mounts)
        in_container = sorted(glob.glob(str(host_dir / normalised.name)))
        resolved = [str(Path(p).resolve()) for p in in_repo]
        assert in_repo, f"rule_files {pattern} matches nothing in the repository"
        assert [str(Path(p).resolve()) for p in in_container] == resolved
        assert str(REPO / "alerts" / "token-health.rules.yml") in resolved
        # Test files in alerts/ are not rule files.
        assert not any(fnmatch.fnmatch(Path(p).name, "*test*") for p in resolved)


def test_promtool_check_config(prometheus_config: dict[str, Any]) -> None:
    # cwd must not matter: promtool resolves rule_files against the config's directory.
    done = run_promtool("check", "config", str(PROMETHEUS_CONFIG), cwd=REPO)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    # promtool also checks every rule file the config loads; make sure it did.
    assert "token-health.rules.yml" in output, output
    assert re.search(r"SUCCESS: [1-9]\d* rules found", output), output


# --- Alertmanager ---------------------------------------------------------------

MATCHER = re.compile(r'^\s*[A-Za-z_][A-Za-z0-9_]*\s*(=|!=|=~|!~)\s*"[^"]*"\s*$')


@pytest.fixture(scope="module")
def alertmanager_config() -> dict[str, Any]:
    data: dict[str, Any] = load(ALERTMANAGER_CONFIG)
    return data


def walk_routes(route: dict[str, Any], depth: int = 0) -> list[tuple[dict[str, Any], int]]:
    found = [(route, depth)]
    for child in route.get("routes", []):
        found.extend(walk_routes(child, depth + 1))
    return found


def test_alertmanager_mount_matches_its_config_flag(services: dict[str, dict[str, Any]]) -> None:
    alertmanager = services["alertmanager"]
    in_container = flag(alertmanager["command"], "--config.file")
    assert to_host(in_container, bind_mounts(alertmanager)) == ALERTMANAGER_CONFIG


def test_alertmanager_routes_reference_defined_receivers(
    alertmanager_config: dict[str, Any],
) -> None:
    assert set(alertmanager_config) <= {
        "global", "route", "receivers", "inhibit_rules", "templates", "time_intervals",
        "mute_time_intervals",
    }  # fmt: skip
    names = [r["name"] for r in alertmanager_config["receivers"]]
    assert len(names) == len(set(names)), f"duplicate receivers: {names}"
    root = alertmanager_config["route"]
    assert "receiver" in root, "the root route needs a receiver (the fallback)"
    assert not any(k in root for k in ("matchers", "match", "match_re", "continue"))
    used = set()
    for route, depth in walk_routes(root):
        if depth:
            assert route.get("matchers"), f"child route without matchers: {route}"
        if "receiver" in route:
            assert route["receiver"] in names, f"unknown receiver {route['receiver']}"
            used.add(route["receiver"])
        for matcher in route.get("matchers", []):
            assert MATCHER.match(matcher), f"bad matcher {matcher!r}"
        for key in ("match", "match_re"):
            assert key not in route, f"{key} is deprecated; use matchers"
    assert used == set(names), f"receivers never routed to: {set(names) - used}"


def matches(matcher: str, labels: dict[str, str]) -> bool:
    """Whether an Alertmanager matcher (``name op "value"``) matches ``labels``."""
    match = re.fullmatch(r'\s*(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"\s*', matcher)
    assert match, matcher
    name, op, value = match.groups()
    actual = labels.get(name, "")
    if op in ("=~", "!~"):
        found = re.fullmatch(value, actual) is not None
        return found if op == "=~" else not found
    return (actual == value) if op == "=" else (actual != value)


def receiver_for(route: dict[str, Any], labels: dict[str, str]) -> str:
    """The receiver Alertmanager picks: the first matching child, recursively."""
    for child in route.get("routes", []):
        if all(matches(m, labels) for m in child.get("matchers", [])):
            return receiver_for({"receiver": route["receiver"], **child}, labels)
    return str(route["receiver"])


def rule_labels() -> list[dict[str, str]]:
    rules = load(REPO / "alerts" / "token-health.rules.yml")
    return [
        {"alertname": rule["alert"], **rule["labels"]}
        for group in rules["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def test_alertmanager_pages_for_critical_and_tickets_the_rest(
    alertmanager_config: dict[str, Any],
) -> None:
    wanted = {"critical": "page", "warning": "ticket", "info": "ticket"}
    labels = rule_labels()
    assert {alert["severity"] for alert in labels} == set(wanted)
    for alert in labels:
        assert receiver_for(alertmanager_config["route"], alert) == wanted[alert["severity"]], alert
    assert not matches('severity="critical"', {"severity": "warning"})
    assert matches('layer=~"probe|expiry"', {"layer": "expiry"})


def test_alertmanager_groups_one_credential_into_one_notification(
    alertmanager_config: dict[str, Any],
) -> None:
    # An incident moves from one alert to the next (credentials rejected,
    # then no valid token): grouping by credential keeps it one page.
    assert alertmanager_config["route"]["group_by"] == ["cluster", "provider"]


def test_alertmanager_inhibit_rules_compare_labels_the_rules_produce(
    alertmanager_config: dict[str, Any],
) -> None:
    rules = alertmanager_config["inhibit_rules"]
    assert len(rules) == 3, "one per layer that holds others back"
    produced = {label for alert in rule_labels() for label in alert}
    # Labels every credential's alert carries from its series; `cluster` is the
    # mixin's clusterLabel, an external label where there is one.
    produced |= {"job", "instance", "provider", "cluster"}
    layers = {alert["layer"] for alert in rule_labels()}
    for rule in rules:
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            assert MATCHER.match(matcher), f"bad matcher {matcher!r}"
            name = re.match(r"\s*(\w+)", matcher).group(1)  # type: ignore[union-attr]
            assert name in produced, f"{matcher}: no rule produces {name}"
        # Without `equal` one critical alert anywhere would mute every warning.
        assert set(rule["equal"]) == {"cluster", "job", "instance", "provider"}
        assert 'severity="critical"' in rule["source_matchers"]
        for layer in layers:  # a source must never match its own targets
            source = any(matches(m, {"layer": layer}) for m in rule["source_matchers"]
                         if m.startswith("layer"))
            target = all(matches(m, {"layer": layer}) for m in rule["target_matchers"])
            assert not (source and target), (rule, layer)
    for bad in ('severity=critical"', "sev erity='x'", 'severity=="x"'):
        assert not MATCHER.match(bad)


# --- Grafana ----------------------------------------------------------------------

GRAFANA_PROVISIONING = PurePosixPath("/etc/grafana/provisioning")


def provisioning_files(service: dict[str, Any], kind: str) -> list[Path]:
    """Host files that Grafana reads as `kind` (datasources, dashboards) provisioning."""
    found = []
    for host, target in bind_mounts(service):
        if target.parent == GRAFANA_PROVISIONING / kind:
            # Grafana reads only *.yaml/*.yml files from these directories.
            assert target.suffix in {".yml", ".yaml"}, target
            found.append(host)
    assert found, f"grafana mounts no {kind} provisioning file"
    return found


def test_grafana_datasource_is_the_compose_prometheus(
    services: dict[str, dict[str, Any]], prometheus_config: dict[str, Any]
) -> None:
    datasources = [
        source
        for path in provisioning_files(services["grafana"], "datasources")
        for source in load(path)["datasources"]
        if source["type"] == "prometheus"
    ]
    assert datasources, "no Prometheus data source is provisioned"
    for source in datasources:
        assert source["url"] == f"http://prometheus:{PROMETHEUS_PORT}", source
        # $__rate_interval is only right if Grafana knows the scrape interval.
        interval = source.get("jsonData", {}).get("timeInterval")
        assert interval == prometheus_config["global"]["scrape_interval"], source
    assert sum(bool(s.get("isDefault")) for s in datasources) == 1
    assert f"127.0.0.1:{PROMETHEUS_PORT}:{PROMETHEUS_PORT}" in services["prometheus"]["ports"]


def test_grafana_dashboard_provider_finds_the_dashboards(
    services: dict[str, dict[str, Any]],
) -> None:
    grafana = services["grafana"]
    mounts = bind_mounts(grafana)
    loaded: set[str] = set()
    for path in provisioning_files(grafana, "dashboards"):
        for provider in load(path)["providers"]:
            assert provider["type"] == "file"
            folder = to_host(provider["options"]["path"], mounts)
            assert folder.is_dir(), f"{provider['name']}: {folder} is not a directory"
            loaded |= {p.name for p in folder.glob("*.json")}
    assert "token-health.json" in loaded
    assert loaded == {p.name for p in (REPO / "dashboards").glob("*.json")}
