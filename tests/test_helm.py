"""The Helm chart in deploy/helm: lints strictly, renders every ci/ scenario, and
what it renders is valid, hardened and consistent with the exporter, the image,
the alerts and the benchmarks.

Needs the helm binary: `python deploy/helm/fetch_helm.py .venv/bin` installs it
(helm is neither in Debian 12 nor on PyPI). Without it these tests fail rather
than skip. Core kinds are validated by kubernetes-validate; the Prometheus
Operator's CRDs are checked structurally, and the rules by promtool.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sysconfig
import tomllib
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.cli import build_parser
from exporter.config import parse_config
from exporter.sharding import select
from tests.promtool import run_promtool

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "deploy" / "helm" / "token-health-exporter"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
SCENARIOS = [p.name.removesuffix("-values.yaml") for p in CI_VALUES]
NAMESPACE = "observability"
KUBE_VERSION = "1.28.0"
# The oldest Kubernetes the chart claims, and the newest kubernetes-validate knows.
VALIDATE_VERSIONS = ["1.28.0", "1.37.0"]
CORE_KINDS = {"Deployment", "Service", "ConfigMap", "ServiceAccount"}
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
SECRETS_DIR = "/run/secrets/token-health-exporter"
CONFIG_ARG = "--config.file="
MIB = 1024 * 1024

Render = Callable[..., list[dict[str, Any]]]


def find_tool(name: str, hint: str) -> str:
    scripts = Path(sysconfig.get_path("scripts")) / name
    if scripts.is_file():
        return str(scripts)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: {hint}")
    return found


@pytest.fixture(scope="session")
def helm() -> str:
    path = find_tool("helm", "install it with `python deploy/helm/fetch_helm.py .venv/bin`; "
                             "the chart tests must not be skipped")
    version = subprocess.run([path, "version", "--short"], capture_output=True, text=True,
                             timeout=60, check=True).stdout
    assert version.startswith("v3."), version
    return path


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=120,
                          check=False)


@cache
def _render(helm: str, release: str, values: tuple[str, ...], sets: tuple[str, ...]) -> str:
    args = ["template", release, str(CHART), "--namespace", NAMESPACE,
            "--kube-version", KUBE_VERSION]
    for path in values:
        args += ["--values", path]
    for item in sets:
        args += ["--set", item]
    done = run_helm(helm, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="session")
def render(helm: str) -> Render:
    def rendered(scenario: str | None = None, release: str = "tokens",
                 sets: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        values = (str(CHART / "ci" / f"{scenario}-values.yaml"),) if scenario else ()
        text = _render(helm, release, values, sets)
        return [d for d in yaml.safe_load_all(text) if d]
    return rendered


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def ci_values(scenario: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((CHART / "ci" / f"{scenario}-values.yaml").read_text())
    return data


def container_of(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    found: dict[str, Any] = container
    return found


def arg_values(container: dict[str, Any], flag: str) -> list[str]:
    return [a.split("=", 1)[1] for a in container["args"] if a.startswith(f"{flag}=")]


def quantity(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", value).groups()  # type: ignore[union-attr]
    return int(number) * {"Mi": MIB, "Gi": 1024 * MIB}[unit]


# --- lint and render ------------------------------------------------------------------


def test_every_scenario_has_a_values_file() -> None:
    assert {"default", "providers", "sharded", "monitoring", "tls"} <= set(SCENARIOS)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_helm_lint_strict(helm: str, scenario: str) -> None:
    done = run_helm(helm, "lint", "--strict", str(CHART), "--namespace", NAMESPACE,
                    "--kube-version", KUBE_VERSION,
                    "--values", str(CHART / "ci" / f"{scenario}-values.yaml"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in done.stdout
    assert "[WARNING]" not in done.stdout and "[ERROR]" not in done.stdout, done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_core_objects_validate_against_the_kubernetes_schemas(
    render: Render, scenario: str, tmp_path: Path,
) -> None:
    core = [o for o in render(scenario) if o["kind"] in CORE_KINDS]
    unknown = {o["kind"] for o in render(scenario)} - CORE_KINDS - CRD_KINDS
    assert not unknown, f"no check covers {unknown}"
    files = []
    for index, document in enumerate(core):
        path = tmp_path / f"{index}-{document['kind']}.yaml"
        path.write_text(yaml.safe_dump(document))
        files.append(path)
    command = [find_tool("kubernetes-validate", "pip install -e '.[test]'"), "--strict"]
    for version in VALIDATE_VERSIONS:
        command += ["-k", version]
    done = subprocess.run([*command, *map(str, files)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    # An unknown kind is only a warning with exit status 0: require a pass per file.
    for path in files:
        for version in VALIDATE_VERSIONS:
            short = version.rsplit(".", 1)[0]
            pattern = rf"INFO \S*{re.escape(path.name)} passed for resource .* version {short}\b"
            assert re.search(pattern, done.stdout), f"{path.name} not validated for {short}"
    assert "WARN" not in done.stdout, done.stdout


def test_schema_turns_a_typo_into_an_error(helm: str) -> None:
    for typo in ("servicMonitor.enabled=true", "serviceMonitor.enable=true",
                 "credentials.existingSecrets=x", "shards=0", "log.level=verbose"):
        done = run_helm(helm, "template", "t", str(CHART), "--set", typo)
        assert done.returncode != 0, typo
        assert "values don't meet the specifications of the schema" in done.stderr, done.stderr


def schema_keys(schema: dict[str, Any], prefix: str = "") -> set[str]:
    keys = set()
    for name, sub in schema.get("properties", {}).items():
        path = f"{prefix}{name}"
        keys.add(path)
        if sub.get("additionalProperties") is False:
            keys |= schema_keys(sub, f"{path}.")
    return keys


def value_keys(values: dict[str, Any], schema: dict[str, Any], prefix: str = "") -> set[str]:
    keys = set()
    for name, value in values.items():
        path = f"{prefix}{name}"
        keys.add(path)
        sub = schema.get("properties", {}).get(name, {})
        if isinstance(value, dict) and sub.get("additionalProperties") is False:
            keys |= value_keys(value, sub, f"{path}.")
    return keys


def test_schema_and_values_yaml_list_the_same_keys() -> None:
    # values.yaml is the documentation: a key the schema accepts must be there.
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert schema["additionalProperties"] is False
    assert value_keys(values, schema) == schema_keys(schema) - {"global"}


def test_app_version_is_the_package_version(render: Render) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]
    image = container_of(one(render("default"), "Deployment"))["image"]
    assert image == f"ghcr.io/token-health-exporter/token-health-exporter:{project['version']}"
    digest = ci_values("tls")["image"]["digest"]
    assert container_of(one(render("tls"), "Deployment"))["image"].endswith(f"@{digest}")


# --- the pods -------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_one_pod_per_shard_and_never_a_surge_pod(render: Render, scenario: str) -> None:
    objects = render(scenario)
    shards = ci_values(scenario).get("shards", 1)
    deployments = of_kind(objects, "Deployment")
    assert len(deployments) == shards
    seen_shards = []
    for deployment in deployments:
        spec = deployment["spec"]
        assert spec["replicas"] == 1
        assert spec["strategy"] == {"type": "Recreate"}
        assert spec["selector"]["matchLabels"].items() <= (
            spec["template"]["metadata"]["labels"].items())
        container = container_of(deployment)
        if shards == 1:
            assert not arg_values(container, "--shard")
            assert not arg_values(container, "--total-shards")
            seen_shards.append(0)
        else:
            assert arg_values(container, "--total-shards") == [str(shards)]
            (shard,) = arg_values(container, "--shard")
            assert spec["template"]["metadata"]["labels"]["token-health-exporter/shard"] == shard
            seen_shards.append(int(shard))
    assert sorted(seen_shards) == list(range(shards))
    # No Deployment's selector matches another shard's pods.
    selectors = [d["spec"]["selector"]["matchLabels"] for d in deployments]
    for deployment in deployments:
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert sum(s.items() <= labels.items() for s in selectors) == 1


def test_every_shard_holds_providers(render: Render) -> None:
    names = [p["name"] for p in ci_values("sharded")["config"]["providers"]]
    total = ci_values("sharded")["shards"]
    assert all(select(names, shard, total) for shard in range(total))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_pod_is_locked_down(render: Render, scenario: str) -> None:
    dockerfile_users = re.findall(r"^USER\s+(\d+)", (REPO / "Dockerfile").read_text(), re.M)
    for deployment in of_kind(render(scenario), "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        # The image's own USER, so mounted files' permissions mean the same in both.
        assert str(pod["securityContext"]["runAsUser"]) == dockerfile_users[-1]
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        context = container_of(deployment)["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        mounts = container_of(deployment)["volumeMounts"]
        assert all(m.get("readOnly") for m in mounts if m["mountPath"] != "/tmp")
    for account in of_kind(render(scenario), "ServiceAccount"):
        assert account["automountServiceAccountToken"] is False


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_container_args_are_accepted_by_the_cli(render: Render, scenario: str) -> None:
    parser = build_parser()
    for deployment in of_kind(render(scenario), "Deployment"):
        container = container_of(deployment)
        args = parser.parse_args(container["args"])
        assert args.web_listen_address == ":10180"
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"http": 10180}
        assert container["livenessProbe"]["httpGet"]["path"] == "/-/healthy"
        assert container["readinessProbe"]["httpGet"]["path"] == "/-/ready"


def benchmark_memory() -> dict[int, dict[str, float]]:
    """`python -m benchmarks.memory`'s table in benchmarks/README.md, in MiB."""
    text = (REPO / "benchmarks" / "README.md").read_text()
    section = text.split("## memory", 1)[1]
    rows = re.findall(r"^\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s", section, re.M)
    assert rows, "the memory table in benchmarks/README.md has moved"
    return {int(r[0]): {"ready": float(r[2]), "peak": float(r[4])} for r in rows}


@pytest.mark.parametrize(("scenario", "credentials"), [("default", 1000), ("sharded", 5000)])
def test_resources_are_sized_from_the_memory_benchmark(
    render: Render, scenario: str, credentials: int,
) -> None:
    measured = benchmark_memory()[credentials]
    for deployment in of_kind(render(scenario), "Deployment"):
        resources = container_of(deployment)["resources"]
        assert "cpu" in resources["requests"]
        assert "cpu" not in resources.get("limits", {}), "a CPU limit throttles renewals"
        assert quantity(resources["requests"]["memory"]) >= measured["ready"] * MIB
        # The limit holds the peak (config parse plus first scrape) with room to spare.
        assert quantity(resources["limits"]["memory"]) >= 1.25 * measured["peak"] * MIB


# --- config and secrets -----------------------------------------------------------------


def test_chart_never_renders_a_secret(render: Render) -> None:
    for scenario in SCENARIOS:
        assert not of_kind(render(scenario), "Secret"), scenario


def test_with_no_providers_the_chart_runs_the_demo(render: Render) -> None:
    # An empty provider list is a config error; an install with defaults shows the demo.
    args = container_of(of_kind(render("default"), "Deployment")[0])["args"]
    assert "--demo" in args
    assert not [a for a in args if a.startswith(CONFIG_ARG)]
    assert not [a for a in container_of(of_kind(render("providers"), "Deployment")[0])["args"]
                if a == "--demo"]


@pytest.mark.parametrize("scenario", ["providers", "sharded"])
def test_config_map_holds_a_config_the_exporter_accepts(
    render: Render, scenario: str, tmp_path: Path,
) -> None:
    objects = render(scenario)
    deployment = of_kind(objects, "Deployment")[0]
    container = container_of(deployment)
    (config_file,) = [a.removeprefix(CONFIG_ARG) for a in container["args"]
                      if a.startswith(CONFIG_ARG)]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    volume = volumes[mounts[str(Path(config_file).parent)]["name"]]
    configmap = one(objects, "ConfigMap")
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    text = configmap["data"][Path(config_file).name]
    # Load it as the pod would: the Secret's files (placeholders here) where the
    # pod mounts them, and the environment from extraEnv.
    used_files = set(re.findall(rf"{re.escape(SECRETS_DIR)}/([\w.-]+)", text))
    for name in used_files:
        (tmp_path / name).write_text(f"placeholder-{name}")
    env = {e["name"]: f"placeholder-{e['name']}" for e in container.get("env", [])}
    config = parse_config(text.replace(SECRETS_DIR, str(tmp_path)), "providers.yaml", env)
    assert [p.name for p in config.providers] == [
        p["name"] for p in ci_values(scenario).get("config", {}).get("providers", [])]
    if used_files:
        secret = volumes["credentials"]["secret"]
        assert secret["secretName"] == ci_values(scenario)["credentials"]["existingSecret"]
        assert mounts[SECRETS_DIR]["name"] == "credentials"
        items = {i["path"] for i in secret.get("items", [])}
        assert not items or used_files <= items, "a secret file the config reads is not mounted"


def test_existing_config_map_and_web_config(render: Render) -> None:
    objects = render("tls")
    assert not of_kind(objects, "ConfigMap"), "existingConfigMap: the chart makes none"
    assert not of_kind(objects, "ServiceAccount")
    deployment = one(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "default"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == "my-providers"
    assert volumes["web-config"]["secret"]["secretName"] == "token-health-exporter-web"
    container = container_of(deployment)
    assert arg_values(container, "--web.config.file") == [
        "/etc/token-health-exporter/web/web-config.yml"]
    assert "--log.library-level=info" in container["args"]
    assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    monitor = one(objects, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["scheme"] == "https"
    assert monitor["spec"]["endpoints"][0]["tlsConfig"]["serverName"] == "token-health-exporter"


# --- Prometheus Operator and Grafana ----------------------------------------------------


def rule_jobs(groups: list[dict[str, Any]]) -> set[str]:
    exprs = " ".join(rule["expr"] for group in groups for rule in group["rules"])
    return set(re.findall(r'\bjob\s*=\s*"([^"]+)"', exprs))


@pytest.mark.parametrize(("release", "sets"), [
    ("tokens", ()),
    ("prod-east", ()),
    ("x", ("nameOverride=other",)),
    ("y", ("fullnameOverride=custom",)),
])
def test_scrape_job_is_the_one_the_mixin_selects_for_any_release_name(
    render: Render, release: str, sets: tuple[str, ...],
) -> None:
    objects = render("monitoring", release=release, sets=sets)
    monitor = one(objects, "ServiceMonitor")
    service = one(objects, "Service")
    # The operator sets job from the Service label that jobLabel names.
    job = service["metadata"]["labels"][monitor["spec"]["jobLabel"]]
    groups = one(objects, "PrometheusRule")["spec"]["groups"]
    jobs = rule_jobs(groups)
    assert jobs, "the rules select no job: this check would compare nothing"
    assert {job} == jobs


def test_service_monitor_scrapes_every_shards_pods(render: Render) -> None:
    objects = render("sharded")
    monitor = one(objects, "ServiceMonitor")
    service = one(objects, "Service")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= (
        service["metadata"]["labels"].items())
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    ports = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
    for deployment in of_kind(objects, "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()


def test_optional_objects_are_off_by_default(render: Render) -> None:
    kinds = {o["kind"] for o in render("default")}
    assert kinds == {"Deployment", "Service", "ConfigMap", "ServiceAccount"}


@pytest.fixture(scope="module")
def monitoring(render: Render) -> Iterator[list[dict[str, Any]]]:
    yield render("monitoring")


def test_prometheus_rule_is_the_mixins_file_unchanged(
    monitoring: list[dict[str, Any]], tmp_path: Path,
) -> None:
    rule = one(monitoring, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["namespace"] == "monitoring"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    source = yaml.safe_load((CHART / "files" / "token-health.rules.yml").read_text())
    assert set(rule["spec"]) == {"groups"} and rule["spec"]["groups"] == source["groups"]
    annotations = " ".join(str(r.get("annotations")) for g in source["groups"] for r in g["rules"])
    assert "{{ $labels" in annotations, "the rules' own templates must reach Prometheus"
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    done = run_promtool("check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr


def test_dashboard_config_map_for_the_grafana_sidecar(monitoring: list[dict[str, Any]]) -> None:
    (configmap,) = [o for o in of_kind(monitoring, "ConfigMap")
                    if "token-health.json" in o.get("data", {})]
    assert configmap["metadata"]["namespace"] == "grafana"
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "Token health"}
    source = json.loads((CHART / "files" / "token-health.json").read_text())
    assert json.loads(configmap["data"]["token-health.json"]) == source
    assert source["uid"] and source["title"]


@pytest.mark.parametrize(("copy", "source"), [
    ("token-health.rules.yml", REPO / "alerts" / "token-health.rules.yml"),
    ("token-health.json", REPO / "dashboards" / "token-health.json"),
])
def test_chart_files_are_the_rendered_mixin(copy: str, source: Path) -> None:
    # The mixin's render script writes both; a hand edit of either shows here.
    assert (CHART / "files" / copy).read_bytes() == source.read_bytes()
