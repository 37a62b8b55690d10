"""The real exporter against authorization servers nobody here wrote.

One exporter (tests/harness.py) runs for this module with a provider per
client-authentication method at oidc-provider, a Keycloak-style issuer with a
path, django-oauth-toolkit found by RFC 8414 discovery, introspection probes
at both servers, and two providers that must fail: an issuer the server does
not claim, and an auth method the server does not list. Sharing one exporter
(and the session's servers) keeps the module to a few seconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

import httpx
import pytest
import yaml

from exporter.assertion import certificate_not_after
from tests.harness import Harness, running_exporter, wait_for
from tests.servers.dot_server import DotServer
from tests.servers.oidc_provider import SCOPE, Credential, OidcProvider
from tests.servers.resource_server import ResourceServer

pytestmark = pytest.mark.slow

#: Every client oidc-provider has, by auth method (and key type for private_key_jwt).
METHOD_CLIENTS = ("basic", "post", "secret-jwt", "rsa-jwt", "pss-jwt", "ec-jwt", "ed-jwt",
                  "mtls", "self-signed")
#: Long enough that nothing runs on its own during the module: probes run when a test asks.
QUIET = {"probe_interval": "1h", "timeout": "10s"}


def credential_config(name: str, issuer: str, cred: Credential, oidc: OidcProvider,
                      **extra: Any) -> dict[str, Any]:
    """A provider entry for one of oidc-provider's registered clients."""
    entry: dict[str, Any] = {"name": name, "issuer": issuer, "client_id": cred.client_id,
                             "auth_method": cred.auth_method, "scope": SCOPE, **QUIET}
    if cred.client_secret is not None:
        entry["client_secret"] = cred.client_secret
    if cred.private_key_file is not None:
        entry["private_key_file"] = str(cred.private_key_file)
    if cred.private_key_id is not None:
        entry["private_key_id"] = cred.private_key_id
    if cred.signing_algorithm is not None:
        entry["signing_algorithm"] = cred.signing_algorithm
    if cred.signing_certificate_file is not None:
        entry["signing_certificate_file"] = str(cred.signing_certificate_file)
    if cred.cert_file is not None:
        # No client_secret anywhere: the certificate is the credential.
        entry["tls_config"] = {"cert_file": str(cred.cert_file), "key_file": str(cred.key_file),
                               "ca_file": str(oidc.ca_file)}
    entry.update(extra)
    return entry


def introspection_probe(name: str, client_id: str | None = None,
                        secret: str | None = None) -> dict[str, Any]:
    probe: dict[str, Any] = {"name": name, "kind": "introspection"}
    if client_id is not None:
        probe.update(client_id=client_id, client_secret=secret)
    return probe


@pytest.fixture(scope="module")
def exporter(oidc_provider: OidcProvider, dot_server: DotServer,
             resource_server: ResourceServer) -> Iterator[Harness]:
    oidc = oidc_provider
    creds = oidc.credentials
    introspector = creds["introspector"]
    providers = [credential_config(f"oidc-{cid}", oidc.issuer, creds[cid], oidc)
                 for cid in METHOD_CLIENTS]
    providers += [
        # RFC 7523bis and FAPI 2.0 want the issuer as the assertion's audience.
        credential_config("oidc-aud-issuer", oidc.issuer, creds["rsa-jwt"], oidc,
                          assertion_audience="issuer"),
        # Keycloak names realms by path: OpenID discovery below the path.
        credential_config("realm", oidc.realm, creds["post"], oidc),
        credential_config("realm-mtls", oidc.realm, creds["mtls"], oidc),
        # A token introspected by a resource server's own client, and used at a
        # resource server that validates it by introspection.
        credential_config("introspected", oidc.issuer, creds["basic"], oidc, probes=[
            introspection_probe("introspect", introspector.client_id,
                                introspector.client_secret),
            {"name": "api", "url": resource_server.api},
        ]),
        # Introspection with the provider's own credential: its certificate,
        # at the mutual-TLS alias of the introspection endpoint.
        credential_config("introspected-mtls", oidc.issuer, creds["mtls"], oidc,
                          probes=[introspection_probe("introspect")]),
        # The issuer's own document names 127.0.0.1, not localhost.
        credential_config("wrong-issuer", oidc.issuer.replace("127.0.0.1", "localhost"),
                          creds["basic"], oidc,
                          probes=[{"name": "api", "url": resource_server.api}]),
        # django-oauth-toolkit: RFC 8414 metadata at the path-inserted location.
        {"name": "dot", "issuer": dot_server.issuer, "client_id": dot_server.client_id,
         "client_secret": dot_server.client_secret, "auth_method": "client_secret_basic",
         "scope": "read", **QUIET,
         "probes": [introspection_probe("introspect", dot_server.introspector_id,
                                        dot_server.introspector_secret),
                    {"name": "api", "url": dot_server.api}]},
        # Its metadata lists client_secret_basic and client_secret_post only.
        {"name": "dot-jwt", "issuer": dot_server.issuer, "client_id": dot_server.client_id,
         "client_secret": dot_server.client_secret, "auth_method": "client_secret_jwt",
         **QUIET},
    ]
    text = yaml.safe_dump({"providers": providers}, sort_keys=False)
    with running_exporter(text) as h:
        wait_for(lambda: h.get("/-/ready").status_code == 200, timeout=60,
                 message="every provider's first token attempt")
        yield h


def valid(h: Harness, provider: str) -> float | None:
    return h.value("oauth_token_valid", provider=provider)


def has_token(h: Harness, provider: str) -> bool:
    return valid(h, provider) == 1.0


def failures(h: Harness, provider: str, error: str) -> float:
    return h.value("oauth_token_refresh_failures_total", provider=provider, error=error) or 0.0


def probe_run(h: Harness, provider: str, probe: str) -> None:
    h.call(h.exporter.probe_job(provider, probe)())


# ------------------------------------------------------------------------- auth methods


def test_every_auth_method_obtains_tokens_through_discovery(exporter: Harness) -> None:
    names = [f"oidc-{cid}" for cid in METHOD_CLIENTS] + ["oidc-aud-issuer"]
    wait_for(lambda: all(valid(exporter, n) == 1.0 for n in names), timeout=30,
             message="a token for every auth method")
    for name in names:
        assert exporter.value("oauth_token_refresh_attempts_total", provider=name) == 1.0, name
        assert exporter.value("oauth_discovery_last_success_timestamp_seconds",
                              provider=name) is not None
        granted = exporter.value("oauth_token_scope_granted", provider=name, scope=SCOPE)
        assert granted == 1.0, name
    assert exporter.tokens  # every token reached the redactor...
    logs = exporter.logs.getvalue()
    for token in exporter.tokens:
        assert token not in logs  # ...and none reached the log


def test_mutual_tls_credentials_use_the_alias_and_need_no_secret(
    exporter: Harness, oidc_provider: OidcProvider
) -> None:
    # oidc-provider refuses tls_client_auth at its plain-HTTP token endpoint
    # (no certificate there): a token proves the request went to the alias.
    for name in ("oidc-mtls", "oidc-self-signed", "realm-mtls"):
        wait_for(partial(has_token, exporter, name), timeout=30, message=name)
        provider = exporter.state(name).provider
        assert provider.client_secret is None
        assert provider.outbound.cert_file is not None
    answer = httpx.post(f"{oidc_provider.token_endpoint}",
                        data={"grant_type": "client_credentials", "client_id": "mtls"})
    assert answer.status_code in (400, 401)


def test_certificate_expiry_is_on_the_metrics_page(
    exporter: Harness, oidc_provider: OidcProvider
) -> None:
    creds = oidc_provider.credentials
    tls_cert, signing_cert = creds["mtls"].cert_file, creds["rsa-jwt"].signing_certificate_file
    assert tls_cert is not None and signing_cert is not None
    page = exporter.get("/metrics").text
    tls_line = ('oauth_client_certificate_expiration_timestamp_seconds'
                '{provider="oidc-mtls",use="tls"} ')
    signing_line = ('oauth_client_certificate_expiration_timestamp_seconds'
                    '{provider="oidc-rsa-jwt",use="signing"} ')
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in page.splitlines()
              if line.startswith("oauth_client_certificate_expiration")}
    assert values[tls_line.strip()] == certificate_not_after(tls_cert)
    assert values[signing_line.strip()] == certificate_not_after(signing_cert)
    # A credential without certificates has no such series.
    assert not any('provider="oidc-basic"' in key for key in values)


# ------------------------------------------------------------------------- discovery


def test_an_issuer_with_a_path_is_discovered(exporter: Harness) -> None:
    wait_for(lambda: valid(exporter, "realm") == 1.0, timeout=30, message="realm token")
    assert exporter.state("realm").provider.issuer.endswith("/realms/test")


def test_django_oauth_toolkit_is_found_by_rfc8414_discovery(exporter: Harness) -> None:
    wait_for(lambda: valid(exporter, "dot") == 1.0, timeout=30, message="DOT token")
    probe_run(exporter, "dot", "api")
    assert exporter.value("oauth_probe_success", provider="dot", probe="api") == 1.0


def test_an_issuer_mismatch_fails_clearly_and_the_credential_is_ready(
    exporter: Harness,
) -> None:
    name = "wrong-issuer"
    assert (exporter.value("oauth_discovery_failures_total", provider=name,
                           error="issuer_mismatch") or 0.0) >= 1.0
    assert failures(exporter, name, "invalid_response") >= 1.0
    assert valid(exporter, name) == 0.0
    assert exporter.value("oauth_discovery_last_success_timestamp_seconds",
                          provider=name) is None
    # Its first attempt completed: readiness (checked by the fixture) and its
    # probes started, reporting that there is no token.
    wait_for(lambda: exporter.value("oauth_probe_failures_total", provider=name, probe="api",
                                    error="no_token"), timeout=30, message="the probe's run")
    logs = exporter.logs.getvalue()
    assert f"provider={name}" in logs and "issuer_mismatch" in logs
    assert "the document's issuer is not the configured issuer" in logs


def test_an_auth_method_the_server_does_not_list_is_refused_unsent(exporter: Harness) -> None:
    name = "dot-jwt"
    assert failures(exporter, name, "invalid_client") >= 1.0
    assert exporter.value("oauth_discovery_failures_total", provider=name,
                          error="invalid_response") is None
    lines = [line for line in exporter.logs.getvalue().splitlines()
             if f"provider={name}" in line and "level=error" in line]
    assert lines and "does not take auth_method client_secret_jwt" in lines[0]
    assert "client_secret_basic, client_secret_post" in lines[0]


# ------------------------------------------------------------------------- introspection


def _revoke(url: str, token: str, auth: httpx.BasicAuth) -> None:
    answer = httpx.post(url, data={"token": token}, auth=auth)
    assert answer.status_code == 200, answer.text


def _revoked_then_renewed(h: Harness, provider: str, revoke: Any) -> None:
    """Active, then revoked at the server: token_revoked, a fresh token, active again."""
    probe_run(h, provider, "introspect")
    assert h.value("oauth_probe_success", provider=provider, probe="introspect") == 1.0
    held = h.state(provider).token
    revoke(held.access_token.get_secret_value())
    probe_run(h, provider, "introspect")
    assert h.value("oauth_probe_failures_total", provider=provider, probe="introspect",
                   error="token_revoked") == 1.0
    # The refusal brought a renewal forward, and the fresh token is active.
    assert h.state(provider).token is not held
    assert h.value("oauth_probe_success", provider=provider, probe="introspect") == 1.0
    assert h.value("oauth_token_refresh_attempts_total", provider=provider) == 2.0


def test_oidc_provider_introspection_sees_an_active_and_a_revoked_token(
    exporter: Harness, oidc_provider: OidcProvider
) -> None:
    basic = oidc_provider.credentials["basic"]
    assert basic.client_secret is not None
    auth = httpx.BasicAuth(basic.client_id, basic.client_secret)
    _revoked_then_renewed(exporter, "introspected",
                          lambda token: _revoke(oidc_provider.revocation_endpoint, token, auth))
    # The resource server, which validates by introspection, takes the fresh token.
    probe_run(exporter, "introspected", "api")
    assert exporter.value("oauth_probe_success", provider="introspected", probe="api") == 1.0


def test_django_oauth_toolkit_introspection_sees_an_active_and_a_revoked_token(
    exporter: Harness, dot_server: DotServer
) -> None:
    auth = httpx.BasicAuth(dot_server.client_id, dot_server.client_secret)
    _revoked_then_renewed(exporter, "dot",
                          lambda token: _revoke(dot_server.revocation_endpoint, token, auth))


def test_introspection_with_the_providers_own_certificate(exporter: Harness) -> None:
    wait_for(lambda: valid(exporter, "introspected-mtls") == 1.0, timeout=30,
             message="mtls token")
    probe_run(exporter, "introspected-mtls", "introspect")
    assert exporter.value("oauth_probe_success", provider="introspected-mtls",
                          probe="introspect") == 1.0
