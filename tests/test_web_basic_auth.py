"""--web.config.file's basic_auth_users and rate_limit on a real exporter web
server: who gets in, what a refusal looks like, what bcrypt costs, and users
changed without a restart."""

from __future__ import annotations

import base64

import httpx
import pytest

from exporter.webconfig import REALM, BasicAuth, load_web_config, parse_basic_authorization
from tests.harness import running_exporter, wait_for
from tests.pki import Pki
from tests.webserving import (
    NO_PROVIDERS,
    PASSWORD,
    basic,
    client_context,
    count_bcrypt,
    hashed,
    serving,
    serving_file,
    tls_block,
    write_web_config,
)


def test_basic_auth_over_tls(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    text = tls_block() + (
        "basic_auth_users:\n"
        f"  prometheus: '{hashed()}'\n"
        f"  grafana: '{hashed('another password')}'\n"
        "http_server_config:\n"
        "  headers:\n"
        "    X-Frame-Options: deny\n"
        "    strict-transport-security: max-age=31536000\n"
    )
    calls = count_bcrypt(monkeypatch)
    # One keep-alive connection throughout: a 401 must leave it usable.
    with serving(pki, text) as h, httpx.Client(verify=client_context(pki), timeout=10) as client:

        def get(path: str, headers: dict[str, str] | None = None,
                method: str = "GET") -> httpx.Response:
            return client.request(method, h.url(path), headers=headers)

        good = basic("prometheus", PASSWORD)
        for path in ("/metrics", "/", "/-/healthy", "/-/ready"):
            resp = get(path, good)
            assert resp.status_code == 200, path
            assert resp.headers["X-Frame-Options"] == "deny"
            assert resp.headers["Strict-Transport-Security"] == "max-age=31536000"
        assert get("/-/reload", good, "POST").status_code == 500  # reached the handler
        assert get("/metrics", basic("grafana", "another password")).status_code == 200
        # Verified once per user, then served from the cache.
        assert len(calls) == 2

        refused = {
            "no credentials": None,
            "wrong password": basic("prometheus", "wrong"),
            "another user's password": basic("grafana", PASSWORD),
            "unknown user": basic("nobody", PASSWORD),
            "empty user": basic("", PASSWORD),
            "not basic": {"Authorization": "Bearer abc"},
            "not base64": {"Authorization": "Basic %%%"},
            "no colon": {"Authorization": "Basic " + base64.b64encode(b"prometheus").decode()},
        }
        for label, headers in refused.items():
            for path in ("/metrics", "/-/healthy", "/"):
                resp = get(path, headers)
                assert resp.status_code == 401, (label, path)
                assert resp.headers["WWW-Authenticate"] == f'Basic realm="{REALM}"'
                assert resp.headers["X-Frame-Options"] == "deny"
                assert "oauth_" not in resp.text
        assert get("/-/reload", None, "POST").status_code == 401
        # Failures are never cached: each one costs a bcrypt (an unknown user too).
        assert len(calls) == 2 + 4 * 3
        assert PASSWORD not in h.logs.getvalue()


@pytest.mark.slow
def test_basic_auth_without_tls_protects_every_endpoint(pki: Pki) -> None:
    text = f"basic_auth_users:\n  prometheus: '{hashed()}'\n"
    with serving(pki, text) as h:
        assert h.url("/").startswith("http://")
        for path in ("/metrics", "/", "/-/healthy", "/-/ready", "/nope"):
            assert h.get(path).status_code == 401, path
        resp = httpx.get(h.url("/metrics"), auth=("prometheus", PASSWORD), timeout=10)
        assert resp.status_code == 200 and "oauth_exporter_build_info" in resp.text
        assert httpx.get(h.url("/metrics"), auth=("prometheus", "nope")).status_code == 401


def test_basic_auth_unit() -> None:
    auth = BasicAuth({"alice": hashed(), "bob": hashed("b")})

    def header(user: bytes, password: bytes) -> str:
        return "Basic " + base64.b64encode(user + b":" + password).decode()

    assert auth.check(header(b"alice", PASSWORD.encode()))
    assert auth.check(header(b"alice", PASSWORD.encode()))  # cached
    assert not auth.check(header(b"alice", b"x" * 100))  # beyond bcrypt's 72 bytes
    assert not auth.check(header(b"alice ", PASSWORD.encode()))
    assert not auth.check(header(b"ALICE", PASSWORD.encode()))
    assert auth.check("basic " + base64.b64encode(b"bob:b").decode())  # scheme is case-blind
    assert not auth.check(None) and not auth.check("")
    # Only salted digests are kept, never the password.
    assert all(PASSWORD.encode() not in key for key in auth._verified)
    assert parse_basic_authorization("Basic " + base64.b64encode(b"u:p:q").decode()) == (
        b"u", b"p:q")
    assert parse_basic_authorization("Basic \u00e9") is None


@pytest.mark.slow
def test_rate_limit_answers_429_before_auth(pki: Pki) -> None:
    text = (f"basic_auth_users:\n  prometheus: '{hashed()}'\n"
            "rate_limit:\n  interval: 1m\n  burst: 2\n")
    config = load_web_config(write_web_config(pki, "limited.yml", text))
    assert "rate limit: one request per 60s, bursts of 2 (429 beyond)" in config.summary()
    with running_exporter(NO_PROVIDERS, log_level="info", web_config=config) as h:
        assert httpx.get(h.url("/metrics"), auth=("prometheus", PASSWORD)).status_code == 200
        assert h.get("/metrics").status_code == 401
        refused = h.get("/metrics")  # the burst is spent; no credentials needed to see it
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert httpx.get(h.url("/metrics"), auth=("prometheus", PASSWORD)).status_code == 429


# --------------------------------------------------------------------------- re-reading


@pytest.mark.slow
def test_users_change_without_a_restart_and_tls_cannot_be_switched_off(pki: Pki) -> None:
    path = write_web_config(pki, "users.yml", f"basic_auth_users:\n  alice: '{hashed()}'\n")
    with serving_file(pki, path) as h:
        assert httpx.get(h.url("/-/healthy"), auth=("alice", PASSWORD)).status_code == 200
        path.write_text(f"basic_auth_users:\n  bob: '{hashed('b')}'\n")
        wait_for(lambda: httpx.get(h.url("/-/healthy"), auth=("bob", "b")).status_code == 200,
                 message="bob admitted")
        assert httpx.get(h.url("/-/healthy"), auth=("alice", PASSWORD)).status_code == 401
        path.write_text(tls_block() + f"basic_auth_users:\n  bob: '{hashed('b')}'\n")
        # Still plain HTTP with the previous users, and an error saying why.
        wait_for(lambda: httpx.get(h.url("/-/healthy"), auth=("bob", "b")).status_code == 200
                 and "turning TLS on or off needs a restart" in h.logs.getvalue(),
                 message="the refusal")


def test_unchanged_users_keep_their_verified_passwords(
    pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = count_bcrypt(monkeypatch)
    users = f"basic_auth_users:\n  alice: '{hashed()}'\n"
    path = write_web_config(pki, "cache.yml", users)
    with serving_file(pki, path) as h:
        assert httpx.get(h.url("/-/healthy"), auth=("alice", PASSWORD)).status_code == 200
        path.write_text(users + "http_server_config:\n  headers: {X-Frame-Options: deny}\n")
        wait_for(lambda: httpx.get(h.url("/-/healthy"), auth=("alice", PASSWORD))
                 .headers.get("X-Frame-Options") == "deny", message="the new header")
    assert len(calls) == 1  # verified once, before and after the re-read
