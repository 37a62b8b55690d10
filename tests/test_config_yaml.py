"""Reading and parsing config files (exporter/yamlfile.py), shared by the provider
file and the web config: every problem names the real file, line and column."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.config import ConfigError, load_config, parse_config
from exporter.webconfig import load_web_config
from exporter.yamlfile import MAX_FILE_BYTES

GOOD = ("providers:\n  - name: a\n    token_url: https://a.example/t\n    client_id: i\n"
        "    client_secret: s\n")


def error_of(text: str, path: str = "p.yaml") -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, path, {})
    return str(info.value)


def load_error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    return str(info.value)


# --------------------------------------------------------------------------- reading


def test_missing_directory_binary_and_non_utf8_files(tmp_path: Path) -> None:
    absent = tmp_path / "absent.yaml"
    assert load_error(absent) == f"{absent}: cannot read config file: No such file or directory"
    assert load_error(tmp_path) == f"{tmp_path}: cannot read config file: Is a directory"

    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"pr\x00\x01\x02")
    assert load_error(binary) == (f"{binary}:1:3: config file holds a NUL byte: it is binary, "
                                  "not YAML text")

    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(b"providers:\n  - name: caf\xe9\n")
    assert load_error(latin1) == f"{latin1}:2:14: config file is not UTF-8 text (byte 0xe9)"


def test_an_oversized_file_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    huge = tmp_path / "huge.yaml"
    with huge.open("wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)  # sparse: costs no disk
    assert load_error(huge) == f"{huge}: config file is larger than 32 MiB"


def test_a_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    assert [p.name for p in load_config(path, env={}).providers] == ["a"]


def test_the_web_config_is_read_by_the_same_code(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_bytes(b"basic_auth_users:\n  a: \x00\n")
    with pytest.raises(ConfigError) as info:
        load_web_config(path)
    assert str(info.value) == (f"{path}:2:6: web config file holds a NUL byte: it is binary, "
                               "not YAML text")
    path.write_text("basic_auth_users: {a: x}\nbasic_auth_users: {b: y}\n")
    with pytest.raises(ConfigError) as info:
        load_web_config(path)
    assert str(info.value) == (f'{path}:2:1: field "basic_auth_users": duplicate key (first '
                               "set at line 1)")


# --------------------------------------------------------------------------- syntax


def test_syntax_errors_name_the_file_line_and_column() -> None:
    message = error_of("providers:\n  - name: [a\n", "conf/providers.yaml")
    assert message.startswith("conf/providers.yaml:3:1: invalid YAML: "), message
    assert "<unicode string>" not in message
    assert error_of("providers:\n\t- name: p\n") == (
        "p.yaml:2:1: invalid YAML: found character that cannot start any token (while "
        "scanning for the next token); this is a tab: YAML indents with spaces only")
    assert error_of("providers: [a]\n---\nproviders: [b]\n").startswith(
        "p.yaml:2:1: invalid YAML: but found another document")
    assert error_of("a: \x01\n") == ("p.yaml:1:4: invalid YAML: character #x0001 is not "
                                     "allowed in YAML text")
    assert error_of("a: *nothing\n").startswith("p.yaml:1:4: invalid YAML: found undefined "
                                                "alias")


def test_an_impossible_timestamp_is_located() -> None:
    text = GOOD + "    client_secret_expires_at: 2027-13-01T00:00:00Z\n"
    assert error_of(text) == ("p.yaml:6:31: invalid YAML: invalid timestamp: month must be "
                              "in 1..12")


def test_duplicate_keys_are_errors_at_the_duplicate() -> None:
    text = ("providers:\n  - name: a\n    token_url: https://a.example/t\n    client_id: i\n"
            "    client_secret: s\n    probes:\n      - name: x\n        url: https://a/x\n"
            "        url: https://a/y\n    client_id: j\n")
    assert error_of(text).splitlines() == [
        'p.yaml:9:9: provider "a": field "probes.0.url": duplicate key (first set at line 8)',
        'p.yaml:10:5: provider "a": field "client_id": duplicate key (first set at line 4)',
    ]
    assert error_of(GOOD + "providers: []\n") == (
        'p.yaml:6:1: field "providers": duplicate key (first set at line 1)')


def test_merge_keys_are_not_duplicates_and_keep_positions() -> None:
    text = ("defaults: &d {timeout: 5s}\nproviders:\n  - &base\n    name: a\n"
            "    token_url: https://a.example/t\n    client_id: i\n    client_secret: s\n"
            "  - <<: *base\n    name: b\n    timeout: soon\n")
    # b's own timeout is reported at its own line; its merged keys do not clash.
    assert error_of(text) == ('p.yaml:10:14: provider "b": field "timeout": invalid duration: '
                              "use e.g. 500ms, 30s, 5m, 1h or seconds (got 'soon')")
    cfg = parse_config(text.replace("soon", "2s"), "p.yaml", {})
    assert [(p.name, p.client_id, p.timeout) for p in cfg.providers] == [("a", "i", 5.0),
                                                                         ("b", "i", 2.0)]


def test_aliases_cannot_explode_or_recurse() -> None:
    laughs = "a: &a [" + ",".join(["lol"] * 10) + "]\n"
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        laughs += f"{name}: &{name} [" + ",".join([f"*{prev}"] * 10) + "]\n"
    assert error_of(laughs) == ("p.yaml: the document expands (through aliases) to more than "
                                "1,000,000 values; refusing to load it")
    assert error_of("providers: &p [*p]\n") == (
        "p.yaml:1:12: invalid YAML: an alias refers to a node that contains it (recursive "
        "structure)")
    assert error_of("providers: " + "[" * 5000 + "]" * 5000 + "\n").startswith(
        "p.yaml:1:")


def test_unknown_keys_point_at_the_key_and_bad_values_at_the_value() -> None:
    text = GOOD + "    colour: blue\n    timeout: 5x\n"
    assert error_of(text).splitlines() == [
        'p.yaml:6:5: provider "a": field "colour": unknown key',
        'p.yaml:7:14: provider "a": field "timeout": invalid duration: use e.g. 500ms, 30s, '
        "5m, 1h or seconds (got '5x')",
    ]


def test_a_provider_without_a_usable_name_is_numbered() -> None:
    assert error_of("providers:\n  - just-a-string\n") == (
        'p.yaml:2:5: provider #1: Input should be a valid dictionary or instance of '
        "ProviderConfig (got 'just-a-string')")
    text = GOOD + "  - name: [x]\n    client_id: i\n"
    assert 'p.yaml:6:11: provider #2: field "name": Input should be a valid string' in (
        error_of(text).splitlines())
