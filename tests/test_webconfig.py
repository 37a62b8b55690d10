"""The --web.config.file file: what loads, what is refused and how the error
names the file, line and field, and every key of exporter-toolkit's format
honoured or refused by name. Serving with it: test_web_tls.py,
test_web_basic_auth.py; on the command line: test_webconfig_cli.py."""

from __future__ import annotations

import logging
import re
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest

from exporter.config import ConfigError
from exporter.webconfig import load_web_config
from tests.pki import Pki
from tests.webserving import BAD_HASH, hashed, tls_block, write_web_config


def test_empty_web_config_means_plain_http_without_auth(pki: Pki) -> None:
    config = load_web_config(write_web_config(pki, "empty.yml", ""))
    assert config.ssl_context is None and config.auth is None and config.headers == ()


def test_accepted_no_op_options_are_logged(pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    text = tls_block("RequestClientCert", "  prefer_server_cipher_suites: true\n") + (
        "http_server_config:\n  http2: true\n")
    with caplog.at_level(logging.INFO, logger="exporter.webconfig"):
        config = load_web_config(write_web_config(pki, "noop.yml", text))
    assert config.ssl_context is not None
    assert config.ssl_context.verify_mode == ssl.CERT_NONE
    messages = caplog.text
    assert "prefer_server_cipher_suites has no effect" in messages
    assert "http2 has no effect" in messages
    assert "RequestClientCert" in messages


def test_basic_auth_without_tls_is_warned_about(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="exporter.webconfig"):
        text = f"basic_auth_users: {{a: '{hashed()}'}}\n"
        load_web_config(write_web_config(pki, "clear.yml", text))
    assert "clear text" in caplog.text


#: (name, web config text, expected fragments of the error)
INVALID: list[tuple[str, Callable[[Pki], str], list[str]]] = [
    ("unknown top-level key", lambda p: "tls_config:\n  cert_file: server.crt\n",
     ['bad.yml:1:1: field "tls_config": unknown key']),
    ("unknown tls key", lambda p: tls_block(extra="  certfile: x\n"),
     ['bad.yml:5:3: field "tls_server_config.certfile": unknown key']),
    ("missing cert file",
     lambda p: "tls_server_config:\n  cert_file: absent.crt\n  key_file: server.key\n",
     ['bad.yml:2:14: field "tls_server_config.cert_file": cannot read',
      "absent.crt", "No such file"]),
    ("missing key_file", lambda p: "tls_server_config:\n  cert_file: server.crt\n",
     ['field "tls_server_config.key_file": Field required']),
    ("bad bcrypt hash", lambda p: f"basic_auth_users:\n  alice: '{BAD_HASH}'\n",
     ['bad.yml:2:10: field "basic_auth_users.alice": not a bcrypt hash']),
    ("plain password instead of a hash", lambda p: "basic_auth_users:\n  alice: hunter2\n",
     ['field "basic_auth_users.alice": not a bcrypt hash']),
    ("user name with a colon", lambda p: f"basic_auth_users:\n  'a:b': '{hashed()}'\n",
     ['field "basic_auth_users.a:b"', "cannot contain ':'"]),
    ("bad client_auth_type", lambda p: tls_block("RequireClientCert"),
     ['bad.yml:4:21: field "tls_server_config.client_auth_type"', "RequireAndVerifyClientCert"]),
    ("RequireAnyClientCert", lambda p: tls_block("RequireAnyClientCert"),
     ['field "tls_server_config.client_auth_type": RequireAnyClientCert is not supported']),
    ("verification without a CA",
     lambda p: tls_block("NoClientCert").replace("NoClientCert", "RequireAndVerifyClientCert"),
     ['field "tls_server_config.client_ca_file": required with client_auth_type']),
    ("CA without verification", lambda p: tls_block(extra="  client_ca_file: test-ca.crt\n"),
     ['bad.yml:5:19: field "tls_server_config.client_ca_file": client certificates are not '
      "verified"]),
    ("cipher_suites", lambda p: tls_block(extra="  cipher_suites: [TLS_AES_128_GCM_SHA256]\n"),
     ['field "tls_server_config.cipher_suites": is not supported']),
    ("curve_preferences", lambda p: tls_block(extra="  curve_preferences: [X25519]\n"),
     ['field "tls_server_config.curve_preferences": is not supported']),
    ("inline key", lambda p: tls_block(extra="  key: '-----BEGIN PRIVATE KEY----- sesame'\n"),
     ['field "tls_server_config.key": (an inline key) is not supported: use key_file']),
    ("TLS 1.1", lambda p: tls_block(extra="  min_version: TLS11\n"),
     ['field "tls_server_config.min_version": TLS11 is not supported']),
    ("min above max", lambda p: tls_block(extra="  min_version: TLS13\n  max_version: TLS12\n"),
     ['field "tls_server_config.min_version": TLS13 is above max_version TLS12']),
    ("cert file holds a key",
     lambda p: "tls_server_config:\n  cert_file: server.key\n  key_file: server.key\n",
     ['field "tls_server_config.cert_file"', "holds no PEM certificate"]),
    ("key does not match",
     lambda p: "tls_server_config:\n  cert_file: server.crt\n  key_file: client.key\n",
     ['field "tls_server_config.key_file"', "does not match the certificate"]),
    ("encrypted key",
     lambda p: "tls_server_config:\n  cert_file: server.crt\n  key_file: server.enc.key\n",
     ['field "tls_server_config.key_file"', "encrypted with a passphrase"]),
    ("header not allowed", lambda p: "http_server_config:\n  headers: {Server: x}\n",
     ['field "http_server_config.headers.Server": header \'Server\' cannot be set']),
    ("bad header value",
     lambda p: "http_server_config:\n  headers: {X-Frame-Options: allow}\n",
     ['field "http_server_config.headers": X-Frame-Options must be one of: deny, sameorigin']),
    ("duplicate key", lambda p: f"basic_auth_users:\n  a: '{hashed()}'\n  a: '{hashed()}'\n",
     ['bad.yml:3:3: field "basic_auth_users.a": duplicate key (first set at line 2)']),
    ("not a mapping", lambda p: "- a\n", ["bad.yml: the top level must be a mapping"]),
]


@pytest.mark.parametrize(("text", "expected"), [(t, e) for _, t, e in INVALID],
                         ids=[name for name, _, _ in INVALID])
def test_invalid_web_config_names_file_and_field(
    pki: Pki, text: Callable[[Pki], str], expected: list[str]
) -> None:
    path = write_web_config(pki, "bad.yml", text(pki))
    with pytest.raises(ConfigError) as caught:
        load_web_config(path)
    message = str(caught.value)
    assert message.startswith(str(path)), message
    for fragment in expected:
        assert fragment in message, message
    assert BAD_HASH not in message and "hunter2" not in message
    assert "sesame" not in message


def test_unreadable_web_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"absent\.yml: cannot read web config file"):
        load_web_config(tmp_path / "absent.yml")


# --------------------------------------------------------------------------- every key


#: Every key of exporter-toolkit's web config, with a value, and whether this
#: exporter honours it (True) or refuses it by name (the error fragment).
TOOLKIT_KEYS: list[tuple[str, str | None, bool | str]] = [
    ("tls_server_config.cert_file", "cert_file: server.crt", True),
    ("tls_server_config.key_file", "key_file: server.key", True),
    ("tls_server_config.client_auth_type", "client_auth_type: NoClientCert", True),
    ("tls_server_config.client_ca_file",
     "client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: test-ca.crt", True),
    ("tls_server_config.min_version", "min_version: TLS12", True),
    ("tls_server_config.max_version", "max_version: TLS13", True),
    ("tls_server_config.prefer_server_cipher_suites", "prefer_server_cipher_suites: true", True),
    ("tls_server_config.cipher_suites", "cipher_suites: [TLS_AES_128_GCM_SHA256]",
     "is not supported"),
    ("tls_server_config.curve_preferences", "curve_preferences: [X25519]", "is not supported"),
    ("tls_server_config.client_allowed_sans", "client_allowed_sans: [a.example]",
     "is not supported"),
    ("tls_server_config.cert", "cert: inline", "(an inline certificate) is not supported"),
    ("tls_server_config.key", "key: inline", "(an inline key) is not supported"),
    ("tls_server_config.client_ca", "client_ca: inline",
     "(an inline CA certificate) is not supported: use client_ca_file"),
    ("http_server_config.http2", None, True),
    ("http_server_config.headers", None, True),
    ("basic_auth_users", None, True),
    ("rate_limit.interval", None, True),
    ("rate_limit.burst", None, True),
]


def toolkit_file(key: str, tls_line: str | None) -> str:
    tls = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
    if tls_line is not None:
        lines = [f"  {line.strip()}" for line in tls_line.split("\n")
                 if not line.strip().startswith(("cert_file:", "key_file:"))]
        return tls + "".join(f"{line}\n" for line in lines)
    section = key.split(".")[0]
    return tls + {
        "http_server_config": "http_server_config:\n  http2: false\n"
                              "  headers: {X-Content-Type-Options: nosniff}\n",
        "basic_auth_users": f"basic_auth_users:\n  prometheus: '{hashed()}'\n",
        "rate_limit": "rate_limit:\n  interval: 1s\n  burst: 5\n",
    }[section]


@pytest.mark.parametrize(("key", "line", "outcome"), TOOLKIT_KEYS,
                         ids=[k for k, _, _ in TOOLKIT_KEYS])
def test_every_exporter_toolkit_key_is_honoured_or_refused_by_name(
    pki: Pki, key: str, line: str | None, outcome: bool | str
) -> None:
    path = write_web_config(pki, "toolkit.yml", toolkit_file(key, line))
    if outcome is True:
        assert load_web_config(path).ssl_context is not None
    else:
        with pytest.raises(ConfigError) as caught:
            load_web_config(path)
        assert f'field "{key}": {outcome}' in str(caught.value)
        assert "inline" not in str(caught.value).split(":", 1)[0]


# --------------------------------------------------------------------------- rate_limit


@pytest.mark.parametrize(("text", "expected"), [
    ("rate_limit:\n  interval: 1s\n", 'field "rate_limit.burst": must be at least 1 when '
     "interval is set"),
    ("rate_limit:\n  interval: -1\n  burst: 1\n",
     'field "rate_limit.interval": must not be negative'),
    ("rate_limit:\n  interval: soon\n  burst: 1\n", 'field "rate_limit.interval": invalid '
     "duration"),
    ("rate_limit:\n  interval: 1s\n  burst: 1\n  per_ip: true\n",
     'field "rate_limit.per_ip": unknown key'),
])
def test_bad_rate_limits_are_refused(pki: Pki, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_web_config(write_web_config(pki, "rate.yml", text))


def test_zero_interval_turns_the_rate_limit_off(pki: Pki) -> None:
    config = load_web_config(write_web_config(pki, "off.yml", "rate_limit:\n  interval: 0\n"))
    assert config.rate_limit is None and "rate limit: off" in config.summary()
