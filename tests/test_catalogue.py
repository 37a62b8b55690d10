"""A catalogue of malformed token responses and config files.

Every token response below is served over real HTTP to one running exporter,
one provider each, next to a healthy provider: each gets an error class (or,
where the answer is odd but usable, a valid token), the process keeps going,
and the healthy provider is unaffected. Every config file gets a clear error
naming the file, the provider and the field.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from exporter.config import ConfigError, parse_config
from exporter.errors import ErrorClass
from exporter.simulator import SimulatedProvider
from tests.harness import running_exporter, wait_for
from tests.scripted import Answer, scripted_server

SECRET = "catalogue-secret-R7w"
E = ErrorClass
OK = None  # a usable answer: a valid token


def tok(**fields: object) -> dict[str, object]:
    return {"access_token": "abc.DEF-123", "token_type": "Bearer", "expires_in": 3600, **fields}


# name -> (answer, expected class or OK)
RESPONSES: dict[str, tuple[Answer, ErrorClass | None]] = {
    "html-200": (Answer(200, "<html><body>Welcome</body></html>"), E.INVALID_RESPONSE),
    "empty-200": (Answer(200, b""), E.INVALID_RESPONSE),
    "truncated-json": (Answer(200, b'{"access_token": "abc", "expires_'), E.INVALID_RESPONSE),
    "json-array": (Answer(200, [tok()]), E.INVALID_RESPONSE),
    "json-string": (Answer(200, b'"abc"', {"Content-Type": "application/json"}),
                    E.INVALID_RESPONSE),
    "json-null": (Answer(200, b"null", {"Content-Type": "application/json"}),
                  E.INVALID_RESPONSE),
    "null-access-token": (Answer(200, tok(access_token=None)), E.INVALID_RESPONSE),
    "numeric-access-token": (Answer(200, tok(access_token=12345)), E.INVALID_RESPONSE),
    "empty-access-token": (Answer(200, tok(access_token="")), E.INVALID_RESPONSE),
    "object-access-token": (Answer(200, tok(access_token={"v": 1})), E.INVALID_RESPONSE),
    "newline-in-token": (Answer(200, tok(access_token="abc\r\nX-Evil: 1")),
                         E.INVALID_RESPONSE),
    "no-access-token": (Answer(200, {"token_type": "Bearer", "expires_in": 3600}),
                        E.INVALID_RESPONSE),
    "zero-expires-in": (Answer(200, tok(expires_in=0)), E.INVALID_RESPONSE),
    "negative-expires-in": (Answer(200, tok(expires_in=-3600)), E.INVALID_RESPONSE),
    "huge-expires-in": (Answer(200, tok(expires_in=10**20)), E.INVALID_RESPONSE),
    "float-expires-in": (Answer(200, tok(expires_in=3599.5)), OK),
    "string-expires-in": (Answer(200, tok(expires_in="3600")), OK),
    "word-expires-in": (Answer(200, tok(expires_in="one hour")), E.INVALID_RESPONSE),
    "bool-expires-in": (Answer(200, tok(expires_in=True)), E.INVALID_RESPONSE),
    "nan-expires-in": (Answer(200, b'{"access_token": "abc", "expires_in": NaN}'),
                       E.INVALID_RESPONSE),
    "mac-token-type": (Answer(200, tok(token_type="mac")), E.INVALID_RESPONSE),
    "200-error-body": (Answer(200, {"error": "invalid_client"}), E.INVALID_CLIENT),
    "oversized": (Answer(200, b"{" + b" " * (2 << 20) + b"}"), E.INVALID_RESPONSE),
    "slow-drip": (Answer(200, json.dumps(tok()).encode(), drip=0.2), E.TIMEOUT),
    "connection-reset": (Answer(200, reset=True), E.CONNECTION_ERROR),
    "short-body": (Answer(200, b'{"access', {"Content-Length": "500"}), E.CONNECTION_ERROR),
    "redirect-elsewhere": (Answer(302, b"", {"Location": "OTHER/steal"}), E.UNEXPECTED_STATUS),
    "401-html": (Answer(401, "<html>Unauthorized</html>"), E.INVALID_CLIENT),
    "500-json": (Answer(500, {"error": "server_error"}), E.SERVER_ERROR),
    "503-retry-after": (Answer(503, "<html>maintenance</html>", {"Retry-After": "120"}),
                        E.SERVER_ERROR),
    "429-http-date": (Answer(429, b"", {"Retry-After": "Wed, 21 Oct 2099 07:28:00 GMT"}),
                      E.RATE_LIMITED),
    "400-numeric-error": (Answer(400, {"error": 42}), E.INVALID_REQUEST),
    "deep-json": (Answer(200, b"[" * 100_000 + b"]" * 100_000), E.INVALID_RESPONSE),
    "not-utf8": (Answer(200, b'{"access_token": "\xff\xfe"}'), E.INVALID_RESPONSE),
    "418": (Answer(418, b"I'm a teapot"), E.UNEXPECTED_STATUS),
}


@pytest.mark.slow
def test_malformed_token_responses_each_get_a_class_and_harm_no_one() -> None:
    with scripted_server({"/steal": Answer(200, tok())}) as other, \
            SimulatedProvider("simplifi") as healthy:
        healthy.add_client("ok", SECRET)
        script = {}
        for name, (answer, _) in RESPONSES.items():
            if "Location" in answer.headers:
                answer.headers["Location"] = answer.headers["Location"].replace("OTHER", other)
            script[f"/{name}"] = answer
        with scripted_server(script) as base:
            providers = [{
                "name": name, "token_url": f"{base}/{name}", "client_id": "c",
                "client_secret": SECRET, "timeout": "2s",
                # One attempt each: the backoff outlasts the test.
                "backoff_initial": "1h", "backoff_max": "1h",
            } for name in RESPONSES]
            providers.append({"name": "healthy", "preset": "simplifi",
                              "token_url": healthy.token_url, "client_id": "ok",
                              "client_secret": SECRET})
            config = yaml.safe_dump({"providers": providers})
            with running_exporter(config, log_level="debug") as h:
                wait_for(h.exporter.ready, timeout=15, message="every first attempt")
                problems = []
                for name, (_, expected) in RESPONSES.items():
                    failures = {e.value for e in E if h.value(
                        "oauth_token_refresh_failures_total", provider=name, error=e.value)}
                    valid = h.value("oauth_token_valid", provider=name)
                    want = set() if expected is None else {expected.value}
                    if failures != want or valid != (1.0 if expected is None else 0.0):
                        problems.append(f"{name}: expected {want or 'valid'}, "
                                        f"got {failures or 'none'} valid={valid}")
                assert not problems, "\n".join(problems)
                assert h.value("oauth_token_valid", provider="healthy") == 1.0
                assert h.get("/-/healthy").status_code == 200
                assert h.get("/metrics").status_code == 200
                logs = h.logs.getvalue()
        assert SECRET not in logs
        # The redirect was not followed: the other host never saw the secret.
        assert other.hits == []
    assert len(RESPONSES) >= 30


GOOD_PROVIDER = {"name": "p", "token_url": "https://auth.example/token", "client_id": "id",
                 "client_secret": SECRET}


def cfg(**changes: object) -> str:
    provider = {k: v for k, v in {**GOOD_PROVIDER, **changes}.items() if v is not None}
    return yaml.safe_dump({"providers": [provider]})


CONFIGS: dict[str, tuple[str, str]] = {
    # name -> (file text, what the error must say)
    "empty-file-is-fine-but-typo-top": ("provider: []\n", 'field "provider": unknown key'),
    "providers-not-a-list": ("providers: {name: p}\n", 'field "providers"'),
    "provider-not-a-mapping": ("providers: [just-a-string]\n", "provider #1"),
    "tab-indentation": ("providers:\n\t- name: p\n", "invalid YAML"),
    "duplicate-names": (yaml.safe_dump({"providers": [GOOD_PROVIDER, dict(GOOD_PROVIDER)]}),
                        'providers.yaml:8:9: provider "p": field "name": duplicate provider '
                        "name (first used at line 4)"),
    "unknown-key": (cfg(client_scret="x"), 'provider "p": field "client_scret": unknown key'),
    "unknown-probe-key": (cfg(probes=[{"name": "a", "url": "https://x/a", "expect": 200}]),
                          'field "probes.0.expect": unknown key'),
    "bad-url-scheme": (cfg(token_url="ftp://auth.example/token"), 'field "token_url"'),
    "relative-url": (cfg(token_url="/oauth/token"), 'field "token_url"'),
    "url-with-spaces": (cfg(token_url="https://auth example/token"), 'field "token_url"'),
    "missing-env-var": (cfg(client_secret="${NO_SUCH_VAR_X}"),
                        "environment variable NO_SUCH_VAR_X is not set"),
    "secret-file-is-a-directory": (cfg(client_secret=None, client_secret_file="/"),
                                   "cannot read the secret file: Is a directory (got '/')"),
    "secret-file-missing": (cfg(client_secret=None, client_secret_file="/nonexistent/s"),
                            "cannot read the secret file: No such file or directory"),
    "both-secrets": (cfg(client_secret_file="/etc/hostname"),
                     'field "client_secret_file": client_secret is set too'),
    "bad-timestamp": (cfg(client_secret_expires_at="next tuesday"),
                      'field "client_secret_expires_at"'),
    "negative-interval": (cfg(probe_interval="-5s"), 'field "probe_interval"'),
    "zero-timeout": (cfg(timeout=0), 'field "timeout"'),
    "bad-rate-limit": (cfg(token_rate_limit="lots"), 'field "token_rate_limit"'),
    "header-not-string": (cfg(headers={"X-Tenant": ["a", "b"]}), 'field "headers.X-Tenant"'),
    "cert-without-key": (cfg(tls={"cert_file": "/etc/hostname"}),
                         "cert_file and key_file must be set together"),
    "unreadable-ca": (cfg(tls={"ca_file": "/nonexistent/ca.pem"}), "is not a readable file"),
    "plain-http-remote": (cfg(token_url="http://auth.example/token"), "plain http"),
    "revoke-without-endpoint": (cfg(revoke_on_shutdown=True), "revocation_url"),
    "bad-proxy": (cfg(proxy_url="socks"), 'field "proxy_url"'),
    "method-unknown": (cfg(probes=[{"name": "a", "url": "https://x/a", "method": "FETCH"}]),
                       'field "probes.0.method"'),
    "empty-provider-list": ("providers: []\n", 'field "providers": is empty'),
    "no-provider-list": ("defaults: {timeout: 5s}\n", 'field "providers": required'),
    "timeout-not-below-interval": (cfg(timeout="1m", probes=[{"name": "a", "url": "https://x/a",
                                                              "interval": "30s"}]),
                                   'field "probes.0.interval": must be greater than timeout'),
    "backoff-inverted": (cfg(backoff_initial="10m", backoff_max="1m"),
                         'field "backoff_initial": must not exceed backoff_max'),
    "jitter-above-fraction": (cfg(renew_at_fraction=0.1, renew_jitter=0.2),
                              'field "renew_jitter": must be less than renew_at_fraction'),
    "status-out-of-range": (cfg(probes=[{"name": "a", "url": "https://x/a",
                                         "expect_status": [600]}]),
                            'field "probes.0.expect_status.0"'),
    "plain-http-probe-with-token": (cfg(probes=[{"name": "a", "url": "http://x.example/a"}]),
                                    "would send the access token in clear"),
    "duplicate-yaml-key": ("providers:\n  - name: p\n    name: q\n",
                           'providers.yaml:3:5: provider "q": field "name": duplicate key'),
    "yaml-syntax-error": ("providers:\n  - name: [p\n", "providers.yaml:3:1: invalid YAML"),
    "bad-interpolation": (cfg(client_id="${ID:+x}"), "unsupported form ${ID...}"),
    "required-variable": (cfg(client_id="${ID:?set ID to the client id}"),
                          "environment variable ID is not set: set ID to the client id"),
    "alias-bomb": ("a: &a [" + ",".join(["x"] * 10) + "]\n" + "".join(
        f"{n}: &{n} [" + ",".join([f"*{p}"] * 10) + "]\n" for p, n in zip("abcdefg", "bcdefgh",
                                                                           strict=True)),
                   "expands (through aliases) to more than 1,000,000 values"),
    "recursive-alias": ("providers: &p [*p]\n", "recursive structure"),
}


@pytest.mark.parametrize(("text", "message"), CONFIGS.values(), ids=CONFIGS.keys())
def test_malformed_config_files_get_clear_errors(tmp_path: Path, text: str,
                                                 message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "providers.yaml", {})
    error = str(info.value)
    assert error.startswith("providers.yaml"), error
    assert message in error, error
    assert SECRET not in error


def test_non_utf8_and_binary_config_files(tmp_path: Path) -> None:
    from exporter.config import load_config

    path = tmp_path / "providers.yaml"
    path.write_bytes(b"providers:\n  - name: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)
    path.write_bytes(b"\x00\x01\x02")
    with pytest.raises(ConfigError, match=str(path)):
        load_config(path)


@pytest.mark.slow
def test_a_429_closes_the_host_only_where_the_budget_is_per_ip() -> None:
    """Retry-After from a host with a known per-IP limit holds back every
    credential there; from any other host it holds back only the one refused."""
    script = {"/busy": Answer(429, {"error": "rate_limited"}, {"Retry-After": "3600"}),
              "/token": Answer(200, tok())}
    with scripted_server(script) as base:
        providers = [
            {"name": name, "token_url": f"{base}{path}", "client_id": "c",
             "client_secret": SECRET, "backoff_initial": "1h", "backoff_max": "1h",
             **({"token_rate_limit": "100/1m"} if limited else {})}
            for name, path, limited in (("refused", "/busy", False), ("neighbour", "/token",
                                                                       False))
        ]
        with running_exporter(yaml.safe_dump({"providers": providers}),
                              log_level="info") as h:
            wait_for(h.exporter.ready)
            assert h.value("oauth_token_valid", provider="refused") == 0.0
            h.call(h.exporter.renew_job("neighbour")())  # after the 429: not held back
            assert h.value("oauth_token_refresh_attempts_total", provider="neighbour") == 2.0
            assert h.value("oauth_token_valid", provider="neighbour") == 1.0
        for p in providers:
            p["token_rate_limit"] = "100/1m"
        # Start with the refused provider alone, then add its neighbour on the same host.
        with running_exporter(yaml.safe_dump({"providers": providers[:1]}),
                              log_level="info") as h:
            wait_for(lambda: h.value("oauth_token_refresh_failures_total", provider="refused",
                                     error="rate_limited") == 1.0)
            both = parse_config(yaml.safe_dump({"providers": providers}), "p.yaml", {})
            h.run(lambda: h.exporter.apply(both))
            time.sleep(1.0)
            # The host is closed for everyone on it: the neighbour has sent nothing.
            assert h.value("oauth_token_refresh_attempts_total", provider="neighbour") == 0.0
            assert h.get("/-/ready").status_code == 503
