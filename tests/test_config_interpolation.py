"""``${VAR}`` in the provider file: the shell's meaning, located errors, warnings
that never show a value."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from exporter.config import ConfigError, load_config, parse_config
from exporter.interpolation import InterpolationError, expand


@pytest.mark.parametrize(
    ("text", "env", "value"),
    [
        ("${A}", {"A": "x"}, "x"),
        ("${A}", {"A": ""}, ""),
        ("pre-${A}-post", {"A": "x"}, "pre-x-post"),
        ("${A:-d}", {}, "d"),
        ("${A:-d}", {"A": ""}, "d"),
        ("${A:-d}", {"A": "x"}, "x"),
        ("${A-d}", {}, "d"),
        ("${A-d}", {"A": ""}, ""),
        ("${A:-}", {}, ""),
        ("${A:-${B}}", {"B": "b"}, "b"),
        ("${A:-${B:-${C:-deep}}}", {}, "deep"),
        ("${A:-x}y}", {}, "xy}"),
        ("${A:-a:b # c}", {}, "a:b # c"),
        ("${A:?need A}", {"A": "v"}, "v"),
        ("${A?need A}", {"A": ""}, ""),
        ("$$", {}, "$"),
        ("$${A}", {"A": "x"}, "${A}"),
        ("a$$b$$$${A}", {}, "a$b$${A}"),
        ("${A:-$$}", {}, "$"),
        ("costs 5$", {}, "costs 5$"),
        ("$1 and $ and $-", {}, "$1 and $ and $-"),
    ],
)
def test_expansion_follows_the_shell(text: str, env: dict[str, str], value: str) -> None:
    assert expand(text, env).value == value


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("${A}", {}, "environment variable A is not set"),
        ("${A:?need A}", {}, "environment variable A is not set: need A"),
        ("${A:?need A}", {"A": ""}, "environment variable A is empty: need A"),
        ("${A?}", {}, "environment variable A is not set"),
        ("${A:-${B}}", {}, "environment variable B is not set"),
        ("${A", {}, "unterminated ${: add the closing }, or write $$ for a literal $"),
        ("${}", {}, "${...} must start with a variable name ([A-Za-z_][A-Za-z0-9_]*); write $$ "
                    "for a literal $"),
        ("${1A}", {}, "${...} must start with a variable name ([A-Za-z_][A-Za-z0-9_]*); write "
                      "$$ for a literal $"),
        ("${A:+x}", {"A": "v"}, "unsupported form ${A...}: use ${A}, ${A:-default} or "
                                "${A:?message}"),
        ("${A B}", {}, "unsupported form ${A...}: use ${A}, ${A:-default} or ${A:?message}"),
    ],
)
def test_expansion_errors(text: str, env: dict[str, str], message: str) -> None:
    with pytest.raises(InterpolationError) as info:
        expand(text, env)
    assert str(info.value) == message


def test_expansion_reports_what_it_read() -> None:
    result = expand("${A}-${B:-d}-$HOME", {"A": "from-env"})
    assert (result.value, result.variables, result.env_values, result.bare) == (
        "from-env-d-$HOME", ["A", "B"], ["from-env"], True)
    assert not expand("$$HOME and $1", {}).bare


BASE = ("providers:\n  - name: a\n    token_url: https://a.example/t\n    client_id: i\n"
        "    client_secret: s\n")


def test_defaults_fill_typed_fields() -> None:
    text = BASE.replace("https://a.example/t", "${TOKEN_URL:-https://b.example/t}") + (
        "    timeout: ${TIMEOUT:-5s}\n    renew_at_fraction: ${FRACTION:-0.5}\n"
        "    allow_insecure_http: ${INSECURE:-false}\n")
    (p,) = parse_config(text, "p.yaml", {"FRACTION": "0.8"}).providers
    assert (p.timeout, p.renew_at_fraction, p.token_url) == (5.0, 0.8, "https://b.example/t")


def test_required_variable_errors_are_located() -> None:
    text = BASE.replace("client_secret: s", "client_secret: ${SECRET:?mount the secret}")
    with pytest.raises(ConfigError) as info:
        parse_config(text, "p.yaml", {})
    assert str(info.value) == ('p.yaml:5:20: provider "a": field "client_secret": environment '
                               "variable SECRET is not set: mount the secret")
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + "    scope: ${SCOPE\n", "p.yaml", {})
    assert str(info.value) == ('p.yaml:6:12: provider "a": field "scope": unterminated ${: add '
                               "the closing }, or write $$ for a literal $")


def test_a_bare_variable_is_kept_and_warned_about_without_its_value(
    caplog: pytest.LogCaptureFixture,
) -> None:
    text = BASE.replace("client_secret: s", "client_secret: pa$sw0rdXYZ") + (
        "    scope: $SCOPE\n")
    with caplog.at_level(logging.WARNING, logger="exporter.config"):
        (p,) = parse_config(text, "p.yaml", {"SCOPE": "read", "sw0rdXYZ": "x"}).providers
    assert p.client_secret is not None
    assert (p.client_secret.get_secret_value(), p.scope) == ("pa$sw0rdXYZ", "$SCOPE")
    hint = ("a $ followed by a name is kept as written; write ${NAME} to read the "
            "environment, or $$ for a literal $")
    assert [r.getMessage() for r in caplog.records] == [
        f'p.yaml:5:20: provider "a": field "client_secret": {hint}',
        f'p.yaml:6:12: provider "a": field "scope": {hint}',
    ]
    assert "sw0rd" not in caplog.text


def test_keys_are_not_interpolated() -> None:
    text = BASE + "    token_params: {'${KEY}': '${VALUE}'}\n"
    (p,) = parse_config(text, "p.yaml", {"KEY": "k", "VALUE": "v"}).providers
    assert dict(p.token_params) == {"${KEY}": "v"}


def test_load_config_reads_the_process_environment(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "providers.yaml"
    path.write_text(BASE.replace("client_id: i", "client_id: ${TEST_INTERP_ID}"))
    monkeypatch.setenv("TEST_INTERP_ID", "from-the-environment")
    assert load_config(path).providers[0].client_id == "from-the-environment"
