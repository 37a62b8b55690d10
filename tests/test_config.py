"""Config loading: every error names file, provider, field and line, never a secret."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.config import ConfigError, load_config, parse_config, parse_duration, summary

SECRET = "s3cr3t-value-never-printed"

GOOD = """\
defaults:
  probe_interval: 30s
  timeout: 5s
providers:
  - name: sd-prod
    preset: simpledocs
    token_url: https://api.simpledocs.example/oauth/token
    client_id: ${SD_ID}
    client_secret: ${SD_SECRET}
    client_secret_expires_at: 2027-03-01T00:00:00Z
    probes:
      - name: documents
        url: https://api.simpledocs.example/v1/documents
        interval: 10s
  - name: smart
    preset: smartdocumentor
    client_id: abc
    client_secret_file: SECRET_FILE
  - name: fi
    preset: simplifi
    client_id: fi-id
    client_secret: literal-secret
    timeout: 2s
"""


def env() -> dict[str, str]:
    return {"SD_ID": "sd-client", "SD_SECRET": SECRET}


def good(tmp_path: Path) -> str:
    secret_file = tmp_path / "smart.secret"
    secret_file.write_text("file-secret-value\n")
    return GOOD.replace("SECRET_FILE", str(secret_file))


def test_presets_and_defaults_are_applied(tmp_path: Path) -> None:
    cfg = parse_config(good(tmp_path), "p.yaml", env())
    sd, smart, fi = cfg.providers
    assert sd.client_id == "sd-client"
    assert sd.client_secret is not None
    assert sd.client_secret.get_secret_value() == SECRET
    assert sd.scope == "read"  # SimpleDocs defaults to read
    assert sd.token_rate_limit is not None and sd.token_rate_limit.requests == 10
    assert sd.timeout == 5.0
    assert sd.probes[0].interval == 10.0 and sd.probes[0].timeout == 5.0
    assert sd.client_secret_expires_at == 1803859200.0
    assert smart.token_url == "https://cloud.smartdocumentor.net/connect/token"
    assert smart.scope == "WebAPI"
    assert smart.client_secret is not None
    assert smart.client_secret.get_secret_value() == "file-secret-value"
    assert fi.auth_method == "client_secret_basic"
    assert fi.timeout == 2.0 and fi.scope is None
    assert SECRET not in summary(cfg)
    assert "file-secret-value" not in summary(cfg)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30),
        ("5m", 300),
        ("1h", 3600),
        ("1h30m", 5400),
        (45, 45),
        ("2.5", 2.5),
        ("1d", 86400),
    ],
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["5x", "", "m5", "1h 5m", True, None, "inf"])
def test_bad_durations(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


def provider_yaml(**fields: str) -> str:
    base = {
        "name": "broken",
        "preset": "generic",
        "token_url": "https://auth.example/token",
        "client_id": "id",
        "client_secret": SECRET,
    }
    base.update(fields)
    body = "".join(f"    {k}: {v}\n" for k, v in base.items() if v != "<omit>")
    return (
        "providers:\n  - name: first\n    preset: dokstamp\n    client_id: x\n"
        "    client_secret: y\n" + "  -" + body[3:]
    )


P = 'providers.yaml:{}: provider "broken": '


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"colour": "blue"}, P.format("11:5") + 'field "colour": unknown key'),
        ({"timeout": "soon"}, P.format("11:14") + 'field "timeout": invalid duration: use '
         "e.g. 500ms, 30s, 5m, 1h or seconds (got 'soon')"),
        ({"token_url": "ftp://x/y"}, P.format("8:16") + 'field "token_url": must be an '
         "absolute http:// or https:// URL (got 'ftp://x/y')"),
        ({"token_url": "not a url"}, P.format("8:16") + 'field "token_url": invalid URL: '
         "contains whitespace (got 'not a url')"),
        ({"token_url": "<omit>"}, P.format("6:5") + 'field "token_url": required: preset '
         "generic has no default token URL; set token_url, or issuer to find it by discovery"),
        ({"preset": "acme"}, P.format("7:13") + "field \"preset\": Input should be "
         "'simpledocs', 'smartdocumentor', 'simplifi', 'simplestore', 'dokstamp' or "
         "'generic' (got 'acme')"),
        ({"name": "has space"}, 'providers.yaml:6:11: provider "has space": field "name": '
         "String should match pattern '^[A-Za-z0-9_-]+$' (got 'has space')"),
        ({"renew_at_fraction": "1.5"}, P.format("11:24") + 'field "renew_at_fraction": '
         "Input should be less than 1 (got 1.5)"),
        ({"auth_method": "private_key"}, P.format("11:18") + 'field "auth_method": '
         "Input should be 'client_secret_post', 'client_secret_basic', 'client_secret_jwt', "
         "'private_key_jwt', 'tls_client_auth' or 'self_signed_tls_client_auth' "
         "(got 'private_key')"),
        ({"client_secret": "<omit>"}, P.format("6:5") + 'field "client_secret": required: '
         "set client_secret or client_secret_file"),
        ({"token_params": "{scope: x}"}, P.format("11:19") + 'field "token_params": scope '
         "cannot be set in token_params; use the provider keys instead"),
        ({"token_url": "http://auth.example/token"}, P.format("8:16") + 'field "token_url": '
         "plain http outside loopback would send the client secret in clear; use https or "
         "set allow_insecure_http: true"),
        ({"probes": "[{name: a, url: 'https://x/a'}, {name: a, url: 'https://x/b'}]"},
         P.format("11:52") + 'field "probes.1.name": duplicate probe name (probe #1 has it '
         "too)"),
        ({"probes": "[{name: a, url: 'https://x/a', expect_status: [999]}]"},
         P.format("11:60") + 'field "probes.0.expect_status.0": Input should be less than '
         "or equal to 599 (got 999)"),
        ({"headers": "{X-Api-Key: [a]}"}, P.format("11:26") + 'field "headers.X-Api-Key": '
         "Input should be a valid string"),
        ({"client_secret": "[a, b]"}, P.format("10:20") + 'field "client_secret": Input '
         "should be a valid string"),
    ],
)
def test_errors_name_file_line_column_provider_and_field(
    fields: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(provider_yaml(**fields), "providers.yaml", {})
    assert str(info.value) == message
    assert SECRET not in str(info.value)


def test_missing_env_var_is_named() -> None:
    text = provider_yaml(client_id="${NOT_SET_ANYWHERE}")
    with pytest.raises(ConfigError) as info:
        parse_config(text, "p.yaml", {})
    assert str(info.value) == ('p.yaml:9:16: provider "broken": field "client_id": '
                               "environment variable NOT_SET_ANYWHERE is not set")


def test_dollar_escape_and_interpolation_keep_yaml_specials() -> None:
    text = provider_yaml(client_secret='"${S}"', client_id="'$${literal}'")
    cfg = parse_config(text, "p.yaml", {"S": "a: b # not a comment"})
    assert cfg.providers[1].client_secret is not None
    assert cfg.providers[1].client_secret.get_secret_value() == "a: b # not a comment"
    assert cfg.providers[1].client_id == "${literal}"


def test_unreadable_and_empty_secret_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    text = provider_yaml(client_secret="<omit>", client_secret_file=str(missing))
    with pytest.raises(ConfigError) as info:
        parse_config(text, "p.yaml", {})
    shown = repr(str(missing)) if len(repr(str(missing))) <= 40 else repr(str(missing))[:37] + "..."
    assert str(info.value) == ('p.yaml:10:25: provider "broken": field "client_secret_file": '
                               "cannot read the secret file: No such file or directory "
                               f"(got {shown})")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    text = provider_yaml(client_secret="<omit>", client_secret_file="${SECRET_PATH}")
    with pytest.raises(ConfigError) as info:
        parse_config(text, "p.yaml", {"SECRET_PATH": str(empty)})
    # The path came from the environment, so it is not echoed.
    assert str(info.value) == ('p.yaml:10:25: provider "broken": field "client_secret_file": '
                               "the secret file is empty (from ${SECRET_PATH}; value not "
                               "shown)")


def test_secret_files_that_cannot_be_secrets(tmp_path: Path) -> None:
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe secret")
    text = provider_yaml(client_secret="<omit>", client_secret_file="${SECRET_PATH}")
    with pytest.raises(ConfigError) as info:
        parse_config(text, "p.yaml", {"SECRET_PATH": str(binary)})
    assert str(info.value).endswith('field "client_secret_file": cannot read the secret file: '
                                    "not UTF-8 text (from ${SECRET_PATH}; value not shown)")
    with pytest.raises(ConfigError) as info:
        parse_config(text, "p.yaml", {"SECRET_PATH": "/dev/zero"})
    assert str(info.value).endswith('field "client_secret_file": the secret file is larger '
                                    "than 64 KiB: is this the right file? (from "
                                    "${SECRET_PATH}; value not shown)")


def test_duplicate_provider_names_are_reported_at_the_duplicate() -> None:
    text = "providers:\n" + "".join(
        f"  - name: same\n    token_url: https://a/t\n    client_id: i\n    client_secret: s{i}\n"
        for i in range(3)
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text, "p.yaml", {})
    assert str(info.value).splitlines() == [
        'p.yaml:6:11: provider "same": field "name": duplicate provider name (first used at '
        "line 2)",
        'p.yaml:10:11: provider "same": field "name": duplicate provider name (first used at '
        "line 2)",
    ]


def test_smartdocumentor_scope_is_enforced() -> None:
    text = (
        "providers:\n  - name: sm\n    preset: smartdocumentor\n    client_id: a\n"
        "    client_secret: b\n    scope: read\n"
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text, "p.yaml", {})
    assert str(info.value) == ('p.yaml:6:12: provider "sm": field "scope": must be '
                               "'WebAPI' for preset smartdocumentor (the provider rejects any "
                               "other)")


ONE = "providers:\n  - {name: a, token_url: 'https://a/t', client_id: i, client_secret: s}\n"


def test_defaults_errors_point_at_defaults() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("defaults:\n  timeout: -1x\n" + ONE, "p.yaml", {})
    assert str(info.value) == ('p.yaml:2:12: field "defaults.timeout": invalid duration: use '
                               "e.g. 500ms, 30s, 5m, 1h or seconds (got '-1x')")
    with pytest.raises(ConfigError) as info:
        parse_config("defaults:\n  client_id: x\n  timout: 5s\n" + ONE, "p.yaml", {})
    assert str(info.value).splitlines() == [
        'p.yaml:2:3: field "defaults.client_id": can be set per provider only, not in defaults',
        'p.yaml:3:3: field "defaults.timout": unknown key; did you mean "timeout"?',
    ]


def test_unknown_keys_suggest_the_closest_known_one() -> None:
    text = ("providers:\n  - name: a\n    token_url: https://a/t\n    client_id: i\n"
            "    client_scret: s\n    probes:\n      - {name: x, url: 'https://a/x', "
            "expect_staus: [200]}\n")
    with pytest.raises(ConfigError) as info:
        parse_config(text, "p.yaml", {})
    assert str(info.value).splitlines() == [
        'p.yaml:5:5: provider "a": field "client_scret": unknown key; did you mean '
        '"client_secret"?',
        'p.yaml:7:39: provider "a": field "probes.0.expect_staus": unknown key; did you mean '
        '"expect_status"?',
    ]


def test_bad_yaml_and_bad_top_level(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("providers: [\n", "p.yaml", {})
    assert str(info.value).startswith("p.yaml:2:1: invalid YAML: ")
    with pytest.raises(ConfigError) as info:
        parse_config("- a\n- b\n", "p.yaml", {})
    assert str(info.value) == ("p.yaml:1:1: the top level must be a mapping (defaults and a "
                               "providers list)")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "absent.yaml")
    assert str(info.value) == (f"{tmp_path / 'absent.yaml'}: cannot read config file: No such "
                               "file or directory")


def run_cli(
    *args: str, env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


@pytest.mark.slow
def test_check_config_cli(tmp_path: Path) -> None:
    path = tmp_path / "providers.yaml"
    path.write_text(good(tmp_path))
    ok = run_cli("--check-config", "--config.file", str(path), env_extra=env())
    assert ok.returncode == 0, ok.stderr
    assert "3 provider(s) OK" in ok.stdout and "sd-prod" in ok.stdout
    assert SECRET not in ok.stdout + ok.stderr
    assert "file-secret-value" not in ok.stdout + ok.stderr

    path.write_text(provider_yaml(timeout="soon"))
    bad = run_cli("--check-config", env_extra={"TOKEN_EXPORTER_CONFIG_FILE": str(path)})
    assert bad.returncode == 1
    assert f"{path}:" in bad.stderr and 'provider "broken"' in bad.stderr
    assert 'field "timeout"' in bad.stderr
    assert SECRET not in bad.stdout + bad.stderr


@pytest.mark.slow
def test_broken_config_exits_non_zero_at_start(tmp_path: Path) -> None:
    path = tmp_path / "providers.yaml"
    path.write_text(provider_yaml(client_id="${MISSING_ID}"))
    proc = run_cli("--config.file", str(path), "--web.listen-address", "127.0.0.1:0")
    assert proc.returncode == 1
    # A logfmt line: the message's quotes come out escaped.
    assert str(path) in proc.stderr and 'provider \\"broken\\"' in proc.stderr
    assert 'field \\"client_id\\"' in proc.stderr and "MISSING_ID" in proc.stderr
    assert SECRET not in proc.stderr
