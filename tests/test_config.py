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
    assert sd.client_secret.get_secret_value() == SECRET
    assert sd.scope == "read"  # SimpleDocs defaults to read
    assert sd.token_rate_limit is not None and sd.token_rate_limit.requests == 10
    assert sd.timeout == 5.0
    assert sd.probes[0].interval == 10.0 and sd.probes[0].timeout == 5.0
    assert sd.client_secret_expires_at == 1803859200.0
    assert smart.token_url == "https://cloud.smartdocumentor.net/connect/token"
    assert smart.scope == "WebAPI"
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


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"colour": "blue"}, "colour", "unknown key"),
        ({"timeout": "soon"}, "timeout", "invalid duration"),
        ({"token_url": "ftp://x/y"}, "token_url", "http"),
        ({"token_url": "not a url"}, "token_url", "invalid URL"),
        ({"token_url": "<omit>"}, None, "token_url is required"),
        ({"preset": "acme"}, "preset", "Input should be"),
        ({"name": "has space"}, "name", "pattern"),
        ({"renew_at_fraction": "1.5"}, "renew_at_fraction", "less than 1"),
        ({"auth_method": "private_key_jwt"}, "auth_method", "Input should be"),
        ({"client_secret": "<omit>"}, None, "exactly one of client_secret"),
        ({"token_params": "{scope: x}"}, "token_params", "cannot be set in token_params"),
        ({"token_url": "http://auth.example/token"}, None, "plain http"),
        (
            {"probes": "[{name: a, url: 'https://x/a'}, {name: a, url: 'https://x/b'}]"},
            None,
            "duplicate probe name",
        ),
        (
            {"probes": "[{name: a, url: 'https://x/a', expect_status: [999]}]"},
            "probes.0.expect_status.0",
            "less than or equal to 599",
        ),
    ],
)
def test_errors_name_file_provider_field_and_line(
    fields: dict[str, str], field: str | None, message: str
) -> None:
    text = provider_yaml(**fields)
    with pytest.raises(ConfigError) as info:
        parse_config(text, "providers.yaml", {})
    text_err = str(info.value)
    assert text_err.startswith("providers.yaml:"), text_err
    name = fields.get("name", "broken")
    assert f'provider "{name}"' in text_err, text_err
    if field:
        assert f'field "{field}"' in text_err, text_err
    assert message in text_err, text_err
    assert SECRET not in text_err


def test_error_line_points_at_the_field() -> None:
    text = provider_yaml(timeout="soon")
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "timeout" in row)
    with pytest.raises(ConfigError, match=rf"^providers.yaml:{line}: provider \"broken\""):
        parse_config(text, "providers.yaml", {})


def test_missing_env_var_is_named() -> None:
    text = provider_yaml(client_id="${NOT_SET_ANYWHERE}")
    with pytest.raises(
        ConfigError,
        match='provider "broken": field "client_id": environment '
        "variable NOT_SET_ANYWHERE is not set",
    ):
        parse_config(text, "p.yaml", {})


def test_dollar_escape_and_interpolation_keep_yaml_specials() -> None:
    text = provider_yaml(client_secret='"${S}"', client_id="'$${literal}'")
    cfg = parse_config(text, "p.yaml", {"S": "a: b # not a comment"})
    assert cfg.providers[1].client_secret.get_secret_value() == "a: b # not a comment"
    assert cfg.providers[1].client_id == "${literal}"


def test_unreadable_and_empty_secret_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    text = provider_yaml(client_secret="<omit>", client_secret_file=str(missing))
    with pytest.raises(
        ConfigError,
        match='provider "broken": field "client_secret_file": cannot read client_secret_file',
    ):
        parse_config(text, "p.yaml", {})
    empty = tmp_path / "empty"
    empty.write_text("\n")
    text = provider_yaml(client_secret="<omit>", client_secret_file=str(empty))
    with pytest.raises(ConfigError, match=r"is empty"):
        parse_config(text, "p.yaml", {})


def test_duplicate_provider_names_and_keys() -> None:
    text = "providers:\n" + "".join(
        f"  - name: same\n    token_url: https://a/t\n    client_id: i\n    client_secret: s{i}\n"
        for i in range(2)
    )
    with pytest.raises(ConfigError, match=r"duplicate provider name.*same"):
        parse_config(text, "p.yaml", {})
    with pytest.raises(ConfigError, match=r"p.yaml:4: duplicate key 'client_id'"):
        parse_config("providers:\n  - name: a\n    client_id: x\n    client_id: y\n", "p.yaml", {})


def test_smartdocumentor_scope_is_enforced() -> None:
    text = (
        "providers:\n  - name: sm\n    preset: smartdocumentor\n    client_id: a\n"
        "    client_secret: b\n    scope: read\n"
    )
    with pytest.raises(ConfigError, match="scope must be 'WebAPI'"):
        parse_config(text, "p.yaml", {})


def test_defaults_errors_point_at_defaults() -> None:
    with pytest.raises(ConfigError, match=r'p.yaml:2: field "defaults.timeout"'):
        parse_config("defaults:\n  timeout: -1x\nproviders: []\n", "p.yaml", {})
    with pytest.raises(ConfigError, match=r'field "defaults.client_id": unknown key'):
        parse_config("defaults:\n  client_id: x\nproviders: []\n", "p.yaml", {})


def test_bad_yaml_and_bad_top_level(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"p.yaml: invalid YAML"):
        parse_config("providers: [\n", "p.yaml", {})
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        parse_config("- a\n- b\n", "p.yaml", {})
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "absent.yaml")


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


def test_broken_config_exits_non_zero_at_start(tmp_path: Path) -> None:
    path = tmp_path / "providers.yaml"
    path.write_text(provider_yaml(client_id="${MISSING_ID}"))
    proc = run_cli("--config.file", str(path), "--web.listen-address", "127.0.0.1:0")
    assert proc.returncode == 1
    # A logfmt line: the message's quotes come out escaped.
    assert str(path) in proc.stderr and 'provider \\"broken\\"' in proc.stderr
    assert 'field \\"client_id\\"' in proc.stderr and "MISSING_ID" in proc.stderr
    assert SECRET not in proc.stderr
