"""Contradictions a user would trip on are errors at the field to change, and what
is odd but workable is a located warning."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from exporter.config import ConfigError, parse_config

BASE = ("providers:\n  - name: a\n    token_url: https://a.example/t\n    client_id: i\n"
        "    client_secret: s\n")
WHY = "or a slow probe would still be running when the next one is due"


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "p.yaml", {})
    return str(info.value).splitlines()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", 'p.yaml: field "providers": required: list at least one provider'),
        ("defaults: {timeout: 5s}\n",
         'p.yaml:1:1: field "providers": required: list at least one provider'),
        ("providers: []\n", 'p.yaml:1:1: field "providers": is empty: list at least one provider'),
        ("defaults: {timeout: 5s}\nproviders:\n",
         'p.yaml:2:1: field "providers": is empty: list at least one provider'),
    ],
)
def test_a_file_without_providers_is_refused(text: str, message: str) -> None:
    assert errors(text) == [message]


def test_timeout_must_be_less_than_each_probes_interval() -> None:
    text = ("defaults:\n  timeout: 30s\n" + BASE + "    probe_interval: 10s\n    probes:\n"
            "      - {name: x, url: 'https://a.example/x'}\n"
            "      - {name: y, url: 'https://a.example/y'}\n"
            "      - {name: z, url: 'https://a.example/z', timeout: 20s, interval: 15s}\n"
            "      - {name: w, url: 'https://a.example/w', interval: 5s}\n"
            "      - {name: ok, url: 'https://a.example/v', interval: 1m}\n")
    assert errors(text) == [
        # x and y inherit both: one error, at the timeout they inherit from defaults.
        f'p.yaml:2:12: provider "a": field "timeout" (set in defaults): must be less than '
        f"probe_interval, {WHY}",
        f'p.yaml:12:56: provider "a": field "probes.2.timeout": must be less than the '
        f"probe's interval, {WHY}",
        f'p.yaml:13:57: provider "a": field "probes.3.interval": must be greater than '
        f"timeout, {WHY}",
    ]


def test_timeout_is_free_without_probes_and_equal_is_refused() -> None:
    parse_config(BASE + "    timeout: 2m\n    probe_interval: 1m\n", "p.yaml", {})
    text = BASE + "    timeout: 1m\n    probes: [{name: x, url: 'https://a.example/x', " \
                  "interval: 60s}]\n"
    assert errors(text) == [f'p.yaml:7:62: provider "a": field "probes.0.interval": must be '
                            f"greater than timeout, {WHY}"]


def test_an_unset_timeout_names_its_default() -> None:
    text = BASE + "    probe_interval: 5s\n    probes: [{name: x, url: 'https://a.example/x'}]\n"
    assert errors(text) == [f'p.yaml:2:5: provider "a": field "timeout" (not set: the default '
                            f"is 10s): must be less than probe_interval, {WHY}"]


def test_contradictions_in_defaults_are_reported_there_once() -> None:
    text = ("defaults:\n  timeout: 30s\n  probe_interval: 10s\n  renew_at_fraction: 0.1\n"
            "  renew_jitter: 0.2\n  backoff_initial: 10m\n  backoff_max: 1m\n" + BASE + BASE[11:]
            .replace("name: a", "name: b"))
    assert errors(text) == [
        f'p.yaml:2:12: field "defaults.timeout": must be less than probe_interval, {WHY}',
        'p.yaml:5:17: field "defaults.renew_jitter": must be less than renew_at_fraction, or '
        "a renewal could fall due as soon as a token arrives",
        'p.yaml:6:20: field "defaults.backoff_initial": must not exceed backoff_max',
    ]


def test_provider_contradictions() -> None:
    text = BASE.replace("https://a.example/t", "http://a.example/t") + (
        "    client_secret_file: /etc/hostname\n    backoff_max: 1s\n    backoff_initial: 2s\n"
        "    revocation_url: http://a.example/revoke\n    revoke_on_shutdown: true\n"
        "    headers: {X-Tenant: a, x-tenant: b}\n    probes:\n"
        "      - {name: x, url: 'http://a.example/x'}\n"
        "      - {name: x, url: 'http://a.example/y', auth: none}\n"
        "      - {name: z, url: 'https://a.example/z', expect_status: [200, 99]}\n")
    assert errors(text) == [
        'p.yaml:11:14: provider "a": field "headers": header X-Tenant is given more than once '
        "(header names are case-insensitive)",
        'p.yaml:15:68: provider "a": field "probes.2.expect_status.1": Input should be greater '
        "than or equal to 100 (got 99)",
    ]
    text = text.replace("x-tenant: b", "X-Other: b").replace("200, 99", "200, 204")
    assert errors(text) == [
        'p.yaml:3:16: provider "a": field "token_url": plain http outside loopback would send '
        "the client secret in clear; use https or set allow_insecure_http: true",
        'p.yaml:6:25: provider "a": field "client_secret_file": client_secret is set too: keep '
        "one of the two",
        'p.yaml:8:22: provider "a": field "backoff_initial": must not exceed backoff_max',
        'p.yaml:9:21: provider "a": field "revocation_url": plain http outside loopback would '
        "send the client secret in clear; use https or set allow_insecure_http: true",
        'p.yaml:13:24: provider "a": field "probes.0.url": plain http outside loopback would '
        "send the access token in clear; use https, set auth: none, or set "
        "allow_insecure_http: true on the provider",
        'p.yaml:14:16: provider "a": field "probes.1.name": duplicate probe name (probe #1 has '
        "it too)",
    ]


def test_plain_http_is_fine_on_loopback_or_when_allowed() -> None:
    probes = "    probes: [{name: x, url: 'http://127.0.0.1:8080/x'}]\n"
    parse_config(BASE + probes, "p.yaml", {})
    remote = probes.replace("127.0.0.1:8080", "api.example")
    parse_config(BASE + remote + "    allow_insecure_http: true\n", "p.yaml", {})


@pytest.mark.parametrize("status", [99, 600])
def test_expected_status_must_be_an_http_status(status: int) -> None:
    text = BASE + ("    probes: [{name: x, url: 'https://a.example/x', "
                   f"expect_status: [{status}]}}]\n")
    bound = "greater than or equal to 100" if status < 100 else "less than or equal to 599"
    assert errors(text) == [f'p.yaml:6:68: provider "a": field "probes.0.expect_status.0": '
                            f"Input should be {bound} (got {status})"]


def test_tls_files_are_checked_at_their_own_field(tmp_path: Path) -> None:
    cert = tmp_path / "client.crt"
    cert.write_text("not checked here\n")
    text = BASE + f"    tls: {{cert_file: {cert}}}\n"
    assert errors(text) == [
        'p.yaml:6:10: provider "a": field "tls.key_file": cert_file and key_file must be set '
        "together",
    ]
    text = BASE + "    tls:\n      ca_file: /nonexistent/ca.pem\n"
    assert errors(text) == ['p.yaml:7:16: provider "a": field "tls.ca_file": is not a readable '
                            "file (got '/nonexistent/ca.pem')"]


def test_preset_headers_are_overridden_whatever_the_case() -> None:
    text = ("providers:\n  - name: d\n    preset: dokstamp\n    client_id: i\n"
            "    client_secret: s\n    headers: {accept: text/plain, X-Tenant: t}\n"
            "    probes: [{name: x, url: 'https://a.example/x', headers: {x-tenant: u}}]\n")
    (p,) = parse_config(text, "p.yaml", {}).providers
    assert dict(p.headers) == {"accept": "text/plain", "X-Tenant": "t"}
    assert dict(p.probes[0].headers) == {"accept": "text/plain", "x-tenant": "u"}


def test_a_secret_expiry_in_the_past_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    text = BASE + "    client_secret_expires_at: 2027-03-01\n"
    with caplog.at_level(logging.WARNING, logger="exporter.config"):
        (p,) = parse_config(text, "p.yaml", {}, now=1803859200.0 - 1).providers
        assert not caplog.records
        parse_config(text, "p.yaml", {}, now=1803859200.0)
    assert p.client_secret_expires_at == 1803859200.0  # the date's midnight, UTC
    assert [r.getMessage() for r in caplog.records] == [
        'p.yaml:6:31: provider "a": field "client_secret_expires_at": is in the past: the '
        "client secret has probably expired; renew it and update the date"]
