"""The manifests in deploy/kubernetes are valid and agree with each other and the image.

Core kinds are validated by kubernetes-validate against the Kubernetes API
schemas (strict: unknown fields are errors). It has no schemas for CRDs and
only warns about them (exit status 0), so PodMonitor, PrometheusRule and
Kustomization are never handed to it; they are checked structurally here, and
the PrometheusRule's PromQL by promtool. The PrometheusRule and the dashboard
ConfigMap are rendered from mixin/ (tests/test_mixin.py checks they are fresh).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sysconfig
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.sharding import select
from tests.promtool import run_promtool

REPO = Path(__file__).resolve().parent.parent
KUBE = REPO / "deploy" / "kubernetes"
RULES = REPO / "alerts" / "token-health.rules.yml"
CORE_FILES = [
    "statefulset.yaml", "service.yaml", "configmap.yaml", "secret.yaml", "dashboard-configmap.yaml",
]
CRD_FILES = ["podmonitor.yaml", "prometheusrule.yaml"]
# The oldest version with the apps.kubernetes.io/pod-index label, and the newest
# the installed kubernetes-validate knows.
KUBERNETES_VERSIONS = ["1.28.0", "1.37.0"]
POD_INDEX = "metadata.labels['apps.kubernetes.io/pod-index']"
NAME = "token-health-exporter"
DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")


def load(name: str) -> dict[str, Any]:
    documents = [d for d in yaml.safe_load_all((KUBE / name).read_text()) if d]
    assert len(documents) == 1, f"{name}: expected one document"
    document: dict[str, Any] = documents[0]
    return document


def tool(name: str, hint: str) -> str:
    scripts = Path(sysconfig.get_path("scripts")) / name
    if scripts.is_file():
        return str(scripts)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: {hint}")
    return found


def kubernetes_validate(*files: Path) -> subprocess.CompletedProcess[str]:
    command = [tool("kubernetes-validate", "pip install -e '.[test]'"), "--strict"]
    for version in KUBERNETES_VERSIONS:
        command += ["-k", version]
    return subprocess.run(
        [*command, *map(str, files)], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture(scope="module")
def statefulset() -> dict[str, Any]:
    return load("statefulset.yaml")


@pytest.fixture(scope="module")
def container(statefulset: dict[str, Any]) -> dict[str, Any]:
    containers = statefulset["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    found: dict[str, Any] = containers[0]
    return found


def arg(container: dict[str, Any], name: str) -> str:
    args: list[str] = container["args"]
    values = [a.split("=", 1)[1] for a in args if a.startswith(f"{name}=")]
    assert len(values) == 1, f"expected one {name}=... in {container['args']}"
    return values[0]


@pytest.fixture(scope="module")
def secret() -> dict[str, Any]:
    return load("secret.yaml")


@pytest.fixture(scope="module")
def providers_config() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(load("configmap.yaml")["data"]["providers.yaml"])
    return data


# --- schemas ----------------------------------------------------------------------


@pytest.mark.slow
def test_core_manifests_validate_against_the_kubernetes_schemas() -> None:
    done = kubernetes_validate(*(KUBE / f for f in CORE_FILES))
    assert done.returncode == 0, done.stdout + done.stderr
    # A kind without a schema is only a WARN with exit status 0: require a pass
    # line per file and version so nothing slipped through unvalidated.
    for name in CORE_FILES:
        for version in KUBERNETES_VERSIONS:
            short = version.rsplit(".", 1)[0]
            pattern = rf"INFO \S*{re.escape(name)} passed for resource .* version {short}\b"
            assert re.search(pattern, done.stdout), f"{name} not validated for {short}:\n{done}"
    assert "WARN" not in done.stdout


def test_kubernetes_validate_rejects_unknown_fields(tmp_path: Path) -> None:
    # Guards the test above: strict mode must turn a typo into an error.
    broken = (
        (KUBE / "statefulset.yaml")
        .read_text()
        .replace(
            "podManagementPolicy: Parallel",
            "podManagementPolicy: Parallel\n  podManagmentPolicy: x",
        )
    )
    path = tmp_path / "statefulset.yaml"
    path.write_text(broken)
    done = kubernetes_validate(path)
    assert done.returncode == 1 and "podManagmentPolicy" in done.stdout, done


def test_every_yaml_file_is_a_known_kind() -> None:
    files = sorted(p.name for p in KUBE.glob("*.yaml"))
    assert files == sorted([*CORE_FILES, *CRD_FILES, "kustomization.yaml"])


# --- StatefulSet ------------------------------------------------------------------


def test_total_shards_equals_replicas(
    statefulset: dict[str, Any], container: dict[str, Any]
) -> None:
    replicas = statefulset["spec"]["replicas"]
    assert isinstance(replicas, int) and replicas >= 1
    assert arg(container, "--total-shards") == str(replicas)


def test_shard_is_the_pod_ordinal(statefulset: dict[str, Any], container: dict[str, Any]) -> None:
    shard = arg(container, "--shard")
    variable = re.fullmatch(r"\$\(([A-Z_][A-Z0-9_]*)\)", shard)
    assert variable, f"--shard should be expanded from the environment, got {shard}"
    # The kubelet expands $(VAR) in args only for variables defined in env.
    env = {e["name"]: e for e in container["env"]}
    source = env[variable.group(1)]["valueFrom"]["fieldRef"]["fieldPath"]
    assert source == POD_INDEX
    assert statefulset["spec"]["podManagementPolicy"] == "Parallel"
    assert statefulset["spec"]["updateStrategy"]["type"] == "RollingUpdate"


def test_example_providers_spread_over_all_shards(
    container: dict[str, Any], providers_config: dict[str, Any]
) -> None:
    total = int(arg(container, "--total-shards"))
    names = [p["name"] for p in providers_config["providers"]]
    owned = [select(names, shard, total) for shard in range(total)]
    assert all(owned), f"a replica would idle: {owned}"


# The lead wires these into the CLI after the manifests land. Once the CLI
# knows them, the test below fails until this set is emptied, so the full
# check of the StatefulSet's arguments switches itself on.
SHARDING_FLAGS_NOT_YET_IN_CLI: set[str] = set()


def test_container_args_are_accepted_by_the_cli(container: dict[str, Any]) -> None:
    from exporter.cli import build_parser

    args = [a.replace("$(SHARD)", "1") for a in container["args"]]
    _, unknown = build_parser().parse_known_args(args)
    assert {u.split("=", 1)[0] for u in unknown} == SHARDING_FLAGS_NOT_YET_IN_CLI


def test_pod_is_locked_down(statefulset: dict[str, Any], container: dict[str, Any]) -> None:
    pod = statefulset["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert "add" not in context["capabilities"]
    # Same UID as the image's USER, so file permissions match in both.
    dockerfile_users = re.findall(r"^USER\s+(\d+)", (REPO / "Dockerfile").read_text(), re.M)
    assert dockerfile_users, "Dockerfile sets no numeric USER"
    assert str(pod["securityContext"]["runAsUser"]) == dockerfile_users[-1]


def test_probes_and_port(container: dict[str, Any]) -> None:
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 10180}
    assert arg(container, "--web.listen-address") == ":10180"
    assert container["livenessProbe"]["httpGet"] == {"path": "/-/healthy", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": "http"}


def test_resources_are_bounded(container: dict[str, Any]) -> None:
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert "memory" in resources["limits"]


def test_config_file_comes_from_the_configmap(
    statefulset: dict[str, Any], container: dict[str, Any]
) -> None:
    volumes = {v["name"]: v for v in statefulset["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    config_file = Path(arg(container, "--config.file"))
    mount = mounts[str(config_file.parent)]
    configmap = load("configmap.yaml")
    assert volumes[mount["name"]]["configMap"]["name"] == configmap["metadata"]["name"]
    assert config_file.name in configmap["data"]
    assert all(m.get("readOnly") for m in mounts.values() if m["mountPath"] != "/tmp")


def test_secret_references_resolve(
    statefulset: dict[str, Any], container: dict[str, Any], secret: dict[str, Any]
) -> None:
    keys = set(secret["stringData"])
    name = secret["metadata"]["name"]
    for variable in container["env"]:
        ref = variable.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            assert ref["name"] == name and ref["key"] in keys, variable
    volumes = [v for v in statefulset["spec"]["template"]["spec"]["volumes"] if "secret" in v]
    assert [v["secret"]["secretName"] for v in volumes] == [name]
    assert {i["key"] for i in volumes[0]["secret"]["items"]} <= keys


def test_secret_is_clearly_an_example(secret: dict[str, Any]) -> None:
    assert all(value.startswith("PLACEHOLDER-") for value in secret["stringData"].values())
    assert (
        "PLACEHOLDER" in secret["metadata"]["annotations"]["token-health-exporter/example"].upper()
    )


def test_headless_service_matches_the_statefulset(statefulset: dict[str, Any]) -> None:
    service = load("service.yaml")
    assert service["spec"]["clusterIP"] == "None"
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    template_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    for selector in (service["spec"]["selector"], statefulset["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= template_labels.items()


# --- providers.yaml ---------------------------------------------------------------


def test_configmap_holds_a_providers_list(providers_config: dict[str, Any]) -> None:
    providers = providers_config["providers"]
    assert isinstance(providers, list) and len(providers) >= 2
    names = [p["name"] for p in providers]
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", n) for n in names)
    for provider in providers:
        assert provider["preset"] in {
            "simpledocs", "smartdocumentor", "simplifi", "simplestore", "dokstamp", "generic",
        }  # fmt: skip
        assert "client_secret" not in provider, "secrets belong in files, not the ConfigMap"
        assert provider["probes"], provider["name"]


def test_configmap_is_a_valid_exporter_config(
    container: dict[str, Any], secret: dict[str, Any], tmp_path: Path
) -> None:
    # Load it as the pod would: the Secret's files where the pod mounts them
    # (here a temp dir) and the environment the StatefulSet sets.
    from exporter.config import parse_config

    text = load("configmap.yaml")["data"]["providers.yaml"]
    mount = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "credentials")
    for key, value in secret["stringData"].items():
        (tmp_path / key).write_text(value)
    env = {
        e["name"]: secret["stringData"][e["valueFrom"]["secretKeyRef"]["key"]]
        for e in container["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    config = parse_config(text.replace(mount, str(tmp_path)), "providers.yaml", env)
    by_name = {p.name: p for p in config.providers}
    assert set(by_name) == {"simpledocs-production", "dokstamp-production"}
    assert by_name["simpledocs-production"].client_id == "PLACEHOLDER-simpledocs-client-id"
    assert by_name["dokstamp-production"].headers["X-Tenant"] == "PLACEHOLDER-dokstamp-tenant"


def test_providers_read_secrets_from_the_mounted_files(
    statefulset: dict[str, Any], container: dict[str, Any], providers_config: dict[str, Any]
) -> None:
    secret_volume = next(
        v for v in statefulset["spec"]["template"]["spec"]["volumes"] if "secret" in v
    )
    mount = next(m for m in container["volumeMounts"] if m["name"] == secret_volume["name"])
    files = {f"{mount['mountPath']}/{i['path']}" for i in secret_volume["secret"]["items"]}
    used = {p["client_secret_file"] for p in providers_config["providers"]}
    assert used == files


def test_environment_variables_used_in_the_config_are_set(
    container: dict[str, Any], providers_config: dict[str, Any]
) -> None:
    text = load("configmap.yaml")["data"]["providers.yaml"]
    used = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text))
    assert used, "the example should show ${VAR} references"
    defined = {e["name"] for e in container["env"]}
    assert used <= defined, f"not set in the StatefulSet: {used - defined}"


# --- Prometheus Operator CRDs -----------------------------------------------------


def test_podmonitor_scrapes_the_pods(
    statefulset: dict[str, Any], container: dict[str, Any]
) -> None:
    monitor = load("podmonitor.yaml")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["kind"] == "PodMonitor"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", monitor["metadata"]["name"])
    spec = monitor["spec"]
    assert set(spec) <= {"selector", "podMetricsEndpoints", "namespaceSelector", "jobLabel",
                         "podTargetLabels", "sampleLimit"}  # fmt: skip
    template_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= template_labels.items()
    port_names = {p["name"] for p in container["ports"]}
    for endpoint in spec["podMetricsEndpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme",
                                 "relabelings", "metricRelabelings", "honorLabels"}  # fmt: skip
        assert endpoint["port"] in port_names
        assert endpoint["path"] == "/metrics"
        for key in ("interval", "scrapeTimeout"):
            assert DURATION.match(endpoint[key]), endpoint[key]


def test_podmonitor_job_name_is_the_one_the_alerts_select(statefulset: dict[str, Any]) -> None:
    # The operator's default job name is "<namespace>/<podmonitor>"; the alert
    # rules select job="token-health-exporter", so jobLabel must supply it.
    groups = yaml.safe_load(RULES.read_text())["groups"]
    exprs = " ".join(rule["expr"] for group in groups for rule in group["rules"])
    jobs = set(re.findall(r'\bjob\s*=\s*"([^"]+)"', exprs))
    assert jobs, "the alert rules select no job; this check has nothing to compare"
    label = load("podmonitor.yaml")["spec"]["jobLabel"]
    assert {statefulset["spec"]["template"]["metadata"]["labels"][label]} == jobs


@pytest.fixture(scope="module")
def prometheus_rule() -> dict[str, Any]:
    assert RULES.is_file(), f"{RULES} is missing: the PrometheusRule is rendered with it"
    return load("prometheusrule.yaml")


def test_prometheusrule_groups_equal_the_alerts_file(prometheus_rule: dict[str, Any]) -> None:
    assert prometheus_rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert prometheus_rule["kind"] == "PrometheusRule"
    assert set(prometheus_rule["spec"]) == {"groups"}
    assert prometheus_rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


def test_generated_manifests_name_their_source() -> None:
    for name in ("prometheusrule.yaml", "dashboard-configmap.yaml"):
        assert (KUBE / name).read_text().startswith("# GENERATED by mixin/render.py"), name
    assert not (KUBE / "build_prometheusrule.py").exists(), "mixin/render.py replaced it"


def test_dashboard_configmap_is_for_the_grafana_sidecar() -> None:
    configmap = load("dashboard-configmap.yaml")
    assert configmap["kind"] == "ConfigMap"
    # The label kube-prometheus-stack's and the grafana chart's sidecar watch.
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["labels"]["app.kubernetes.io/name"] == NAME
    assert set(configmap["data"]) == {"token-health.json"}
    dashboard = REPO / "dashboards" / "token-health.json"
    assert configmap["data"]["token-health.json"] == dashboard.read_text()
    assert json.loads(configmap["data"]["token-health.json"])["uid"] == "token-health"
    # A ConfigMap holds at most 1 MiB; the sidecar's annotations leave less.
    assert len((KUBE / "dashboard-configmap.yaml").read_bytes()) < 512 * 1024


def test_prometheusrule_structure_and_promql(
    prometheus_rule: dict[str, Any], tmp_path: Path
) -> None:
    groups = prometheus_rule["spec"]["groups"]
    assert groups
    for group in groups:
        assert set(group) <= {"name", "interval", "rules", "limit", "partial_response_strategy"}
        for rule in group["rules"]:
            assert ("alert" in rule) != ("record" in rule), rule
            assert isinstance(rule["expr"], str) and rule["expr"].strip()
            if "for" in rule:
                assert DURATION.match(rule["for"]), rule["for"]
            for key in ("labels", "annotations"):
                assert all(isinstance(v, str) for v in rule.get(key, {}).values()), rule
    # The operator hands spec.groups to Prometheus unchanged: promtool must accept them.
    rule_file = tmp_path / "rules.yml"
    rule_file.write_text(yaml.safe_dump({"groups": groups}))
    done = run_promtool("check", "rules", str(rule_file))
    assert done.returncode == 0, done.stdout + done.stderr


# --- kustomization ----------------------------------------------------------------


def test_kustomization_lists_every_manifest_but_the_example_secret(
    container: dict[str, Any],
) -> None:
    kustomization = load("kustomization.yaml")
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    resources = kustomization["resources"]
    assert len(resources) == len(set(resources))
    assert all((KUBE / r).is_file() for r in resources)
    assert set(resources) == {*CORE_FILES, *CRD_FILES} - {"secret.yaml"}
    assert "dashboard-configmap.yaml" in resources
    image_names = {i["name"] for i in kustomization["images"]}
    assert container["image"].split(":")[0] in image_names
