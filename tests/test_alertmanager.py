"""A real Alertmanager with examples/alertmanager/alertmanager.yml inhibits exactly what
the rules' hierarchy clauses hold back, situation by situation.

1. The rules are rendered without the hierarchy clauses (``hierarchyInRules:
   false``) and promtool replays every situation of
   alerts/tests/situations.test.yml through them: the alerts that fire then are
   the situation's alerts plus those in ``HELD_BACK``.
2. Those alerts, with the labels the rules give them, are posted to a real
   Alertmanager (Debian's ``prometheus-alertmanager``) on loopback through its
   v2 API, one ``instance`` per situation so that situations cannot inhibit
   each other; its API must report exactly the ``HELD_BACK`` ones as inhibited
   and the situation's own alerts as active.

So the inhibit rules and the clauses encode the same hierarchy, and the
Alertmanager config compares labels the rules really produce. Without the
Alertmanager binary the tests fail and say how to install it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from mixin import render as mixin_render
from tests.harness import wait_for
from tests.promql import load_rules
from tests.promtool import run_promtool
from tests.scripted import free_port
from tests.test_rules import FIRING, SITUATIONS, SITUATIONS_FILE, Situation

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "examples" / "alertmanager" / "alertmanager.yml"
INSTALL_HINT = (
    "Alertmanager is required to test the inhibit rules. Install it with "
    "`apt-get install prometheus-alertmanager` (Debian/Ubuntu), or point ALERTMANAGER "
    "at an alertmanager binary."
)
JOB = "token-health-exporter"

# Per situation, the alerts that only the rules' hierarchy clauses keep from
# firing: what Alertmanager's inhibit rules must hold back.
HELD_BACK: dict[str, set[str]] = {
    "credentials rejected, token expired": {"TokenHealthCredentialsRejected"},
    "token endpoint failing, token expired": {"TokenHealthRenewalFailing"},
    "API refuses the token, exporter holds none": {"TokenHealthApiRefusesToken"},
    "whole provider down, token expires within 30 minutes": {"TokenHealthProbeFailing"},
    "client secret expired, token still valid": {"TokenHealthClientSecretExpiresVerySoon"},
    "client secret expired, token expired": {
        "TokenHealthCredentialsRejected",
        "TokenHealthClientSecretExpiresVerySoon",
    },
    "probe failing while the client secret expires in 2 days": {
        "TokenHealthClientSecretExpiresVerySoon"},
}


def alertmanager_path() -> Path:
    """The Alertmanager binary; raises AssertionError saying how to install it."""
    configured = os.environ.get("ALERTMANAGER")
    if configured:
        path = Path(configured)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise AssertionError(f"ALERTMANAGER={configured} is not an executable file. "
                                 f"{INSTALL_HINT}")
        return path
    for name in ("prometheus-alertmanager", "alertmanager"):
        found = shutil.which(name)
        if found:
            return Path(found)
    raise AssertionError(f"alertmanager not found on PATH. {INSTALL_HINT}")


def amtool_path() -> Path:
    found = shutil.which("amtool")
    if found is None:
        raise AssertionError(f"amtool not found on PATH. {INSTALL_HINT}")
    return Path(found)


# The labels each alert gets from its rule (the same with or without clauses).
RULE_LABELS = {rule["alert"]: rule["labels"] for rule in load_rules() if "alert" in rule}


@dataclass(frozen=True)
class Posted:
    """One alert as Prometheus would send it for a situation."""

    situation: str
    instance: str
    alertname: str
    provider: str

    def labels(self) -> dict[str, str]:
        labels = {"alertname": self.alertname, "job": JOB, "instance": self.instance,
                  **RULE_LABELS[self.alertname]}
        if self.provider:
            labels["provider"] = self.provider
        return labels


def raw_alerts(situation: Situation) -> set[tuple[str, str]]:
    """(alertname, provider) firing at the end of a situation without the clauses."""
    fired = {(name, provider) for name, _, _, provider in situation.final.alerts}
    providers = {provider for _, provider in fired} or {"p"}
    (provider,) = providers
    return fired | {(name, provider) for name in HELD_BACK.get(situation.name, set())}


def test_held_back_names_real_situations_and_alerts() -> None:
    assert set(HELD_BACK) <= {s.name for s in SITUATIONS}
    assert set().union(*HELD_BACK.values()) <= set(RULE_LABELS)
    # Something of every layer below the top is held back somewhere.
    layers = {RULE_LABELS[name]["layer"] for names in HELD_BACK.values() for name in names}
    assert layers == {"token_endpoint", "probe", "expiry"}


@pytest.mark.slow
def test_rules_without_the_clauses_fire_what_is_held_back(tmp_path: Path) -> None:
    rules = tmp_path / "raw.rules.yml"
    rules.write_text(yaml.safe_dump(
        mixin_render.evaluate({"hierarchyInRules": False})["alerts"], sort_keys=False))
    doc = yaml.safe_load(SITUATIONS_FILE.read_text())
    doc["rule_files"] = [str(rules)]
    by_name = {s.name: s for s in SITUATIONS}
    for test in doc["tests"]:
        situation = by_name[test["name"]]
        final = situation.final
        samples = []
        for name, provider in sorted(raw_alerts(situation)):
            labels = {"alertname": name, **RULE_LABELS[name]}
            if provider:
                labels["provider"] = provider
            text = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
            samples.append({"labels": "{" + text + "}", "value": 1})
        test["promql_expr_test"] = [
            {"expr": FIRING, "eval_time": final.eval_time, "exp_samples": samples}]
    replay = tmp_path / "raw.test.yml"
    replay.write_text(yaml.safe_dump(doc, sort_keys=False, width=1000))
    done = run_promtool("test", "rules", str(replay))
    assert done.returncode == 0, done.stdout + done.stderr


def test_example_config_passes_amtool() -> None:
    done = subprocess.run([str(amtool_path()), "check-config", str(CONFIG)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 inhibit rules" in done.stdout


def test_missing_alertmanager_fails_with_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ALERTMANAGER", raising=False)
    monkeypatch.setenv("PATH", "")
    with pytest.raises(AssertionError, match=r"apt-get install prometheus-alertmanager"):
        alertmanager_path()


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    binary = alertmanager_path()
    workdir = tmp_path_factory.mktemp("alertmanager")
    config = workdir / "alertmanager.yml"
    shutil.copy(CONFIG, config)
    address = f"127.0.0.1:{free_port()}"
    log = workdir / "alertmanager.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(binary), f"--config.file={config}", f"--storage.path={workdir / 'data'}",
             f"--web.listen-address={address}", "--cluster.listen-address=",
             "--log.level=debug"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
    client = httpx.Client(base_url=f"http://{address}", timeout=5, trust_env=False)
    try:

        def ready() -> bool:
            assert proc.poll() is None, log.read_text(errors="replace")
            try:
                return client.get("/-/ready").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, timeout=30, interval=0.1, message="Alertmanager's /-/ready")
        yield client
    finally:
        client.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def post(client: httpx.Client, alerts: list[Posted]) -> None:
    now = datetime.now(UTC)
    body = [
        {
            "labels": alert.labels(),
            "annotations": {"summary": f"{alert.alertname} in {alert.situation}."},
            "startsAt": now.isoformat(),
            "endsAt": (now + timedelta(hours=1)).isoformat(),
            "generatorURL": "http://127.0.0.1:9090/graph",
        }
        for alert in alerts
    ]
    response = client.post("/api/v2/alerts", json=body)
    assert response.status_code == 200, response.text


def states(client: httpx.Client) -> dict[tuple[str, str], dict[str, Any]]:
    """(instance, alertname) -> status of every alert Alertmanager holds."""
    response = client.get("/api/v2/alerts", params={
        "active": "true", "silenced": "true", "inhibited": "true", "unprocessed": "true"})
    assert response.status_code == 200, response.text
    return {(a["labels"]["instance"], a["labels"]["alertname"]): a["status"]
            for a in response.json()}


@pytest.mark.slow
def test_alertmanager_inhibits_exactly_what_the_rules_hold_back(
    alertmanager: httpx.Client,
) -> None:
    posted = [
        Posted(situation.name, f"situation-{i:02d}", name, provider)
        for i, situation in enumerate(SITUATIONS)
        for name, provider in sorted(raw_alerts(situation))
    ]
    assert len(posted) > len(SITUATIONS)
    post(alertmanager, posted)
    keys = {(p.instance, p.alertname) for p in posted}

    def settled() -> bool:
        found = states(alertmanager)
        return keys <= set(found) and all(
            found[k]["state"] != "unprocessed" for k in keys)

    wait_for(settled, timeout=30, interval=0.2, message="Alertmanager to process the alerts")

    def outcome() -> dict[str, tuple[set[str], set[str]]]:
        found = states(alertmanager)
        result: dict[str, tuple[set[str], set[str]]] = {
            s.name: (set(), set()) for s in SITUATIONS}
        for p in posted:
            active, inhibited = result[p.situation]
            status = found[(p.instance, p.alertname)]
            assert not status["silencedBy"]
            (inhibited if status["inhibitedBy"] else active).add(p.alertname)
        return result

    expected = {
        s.name: ({name for name, *_ in s.final.alerts}, HELD_BACK.get(s.name, set()))
        for s in SITUATIONS
    }
    # The inhibitor learns of source alerts asynchronously: wait for the
    # expected picture, then compare once more to say what differs.
    with contextlib.suppress(AssertionError):
        wait_for(lambda: outcome() == expected, timeout=30, interval=0.2,
                 message="the inhibitions to match the rules")
    got = outcome()
    wrong = {name: (got.get(name), want) for name, want in expected.items()
             if got.get(name) != want}
    assert wrong == {}, "situation: ((active, inhibited) got, (active, inhibited) expected)"
    # Exactly one alert of each situation with a page is a page.
    for name, (active, _) in got.items():
        pages = [a for a in active if RULE_LABELS[a]["severity"] == "critical"]
        assert len(pages) <= 1, (name, pages)
