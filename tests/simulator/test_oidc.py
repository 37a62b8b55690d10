"""The generic OpenID Connect vendor (kind "oidc"): discovery, JWT client authentication,
introspection and revocation, checked the way oidc-provider and Keycloak check them."""

from __future__ import annotations

import secrets
import ssl
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, OctKey, RSAKey

from exporter.errors import ErrorClass
from exporter.simulator import KINDS, SimulatedProvider, Simulation
from tests.pki import Pki
from tests.simulator.simclient import (
    CLIENT_ID,
    SECRET,
    Factory,
    VendorCase,
    basic,
    call_api,
    get_token,
    request_token,
)

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
HS_CLIENT, HS_SECRET = "hs-client", "hs-secret-" + "k" * 22  # >= 14 bytes: joserfc's minimum


def assert_refused(response: httpx.Response, reason: str) -> None:
    assert response.status_code == 401
    assert response.json() == {"error": "invalid_token"}
    challenge = response.headers["www-authenticate"]
    if reason == "missing":
        assert challenge == 'Bearer realm="oidc"'
    else:
        assert challenge == f'Bearer realm="oidc", error="invalid_token", ' \
                            f'error_description="{reason}"'


CASE = VendorCase(
    kind="oidc",
    token_body=lambda body: {"access_token": body["access_token"], "token_type": "Bearer",
                             "expires_in": 300, "scope": "read"},
    invalid_client=(401, {"error": "invalid_client"}),
    described=True,
    assert_refused=assert_refused,
    rate_limited=lambda body: body == {"error": "rate_limited"},
    expired_class=ErrorClass.INVALID_TOKEN,
)


# --- keys and assertions ----------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})


@pytest.fixture(scope="module")
def ec_key() -> ECKey:
    return ECKey.generate_key("P-256", parameters={"kid": "ec-1"})


@pytest.fixture
def oidc(make: Factory, rsa_key: RSAKey, ec_key: ECKey) -> SimulatedProvider:
    """An oidc provider with a Basic client, an HS256 client and two key clients."""
    provider = make("oidc")
    provider.add_client(HS_CLIENT, HS_SECRET, auth_method="client_secret_jwt")
    provider.add_client("rsa-client", jwks=rsa_key.as_dict(private=False))
    # A key set with two keys: the assertion's kid picks one.
    provider.add_client("ec-client", jwks={"keys": [
        ECKey.generate_key("P-256", parameters={"kid": "ec-0"}).as_dict(private=False),
        ec_key.as_dict(private=False),
    ]})
    return provider


def assertion(
    key: OctKey | RSAKey | ECKey, client_id: str, audience: str | list[str], *, alg: str,
    lifetime: int = 60, iat: int | None = None, jti: str | None = None,
    drop: tuple[str, ...] = (), **claims: Any,
) -> str:
    now = int(time.time()) if iat is None else iat
    body: dict[str, Any] = {"iss": client_id, "sub": client_id, "aud": audience, "iat": now,
                            "exp": now + lifetime, "jti": jti or secrets.token_urlsafe(16)}
    body.update(claims)
    body = {name: value for name, value in body.items() if name not in drop}
    header: dict[str, Any] = {"alg": alg}
    if key.kid:
        header["kid"] = key.kid
    return jwt.encode(header, body, key, algorithms=[alg])


def post_assertion(http: httpx.Client, url: str, signed: str,
                   **form: str) -> httpx.Response:
    return http.post(url, data={"grant_type": "client_credentials",
                                "client_assertion_type": JWT_BEARER,
                                "client_assertion": signed, **form})


def hs_key() -> OctKey:
    return OctKey.import_key(HS_SECRET.encode())


# --- discovery ----------------------------------------------------------------------


def test_discovery_document(oidc: SimulatedProvider, http: httpx.Client) -> None:
    base = oidc.base_url
    response = http.get(base + "/.well-known/openid-configuration")

    assert response.status_code == 200
    doc = response.json()
    assert doc["issuer"] == base
    assert doc["token_endpoint"] == oidc.token_url == base + "/token"
    assert doc["introspection_endpoint"] == base + "/token/introspection"
    assert doc["revocation_endpoint"] == base + "/token/revocation"
    assert doc["jwks_uri"] == base + "/jwks"
    assert doc["token_endpoint_auth_methods_supported"] == [
        "client_secret_basic", "client_secret_post", "client_secret_jwt", "private_key_jwt"]
    assert set(doc["token_endpoint_auth_signing_alg_values_supported"]) == {
        "HS256", "RS256", "PS256", "ES256"}
    assert doc["grant_types_supported"] == ["client_credentials"]
    assert "mtls_endpoint_aliases" not in doc  # plain http
    # RFC 8414's location serves the same document.
    assert http.get(base + "/.well-known/oauth-authorization-server").json() == doc
    assert http.post(base + "/.well-known/openid-configuration").status_code == 405


def test_discovery_faults(oidc: SimulatedProvider, http: httpx.Client) -> None:
    url = oidc.base_url + "/.well-known/openid-configuration"

    oidc.set_faults(wrong_issuer=True)
    wrong = http.get(url).json()
    assert wrong["issuer"] != oidc.base_url
    assert wrong["token_endpoint"] == oidc.token_url  # only the issuer lies

    oidc.set_faults(wrong_issuer=False, discovery_status=404)
    missing = http.get(url)
    assert (missing.status_code, missing.json()) == (404, {"error": "not_found"})
    oidc.set_faults(discovery_status=500)
    assert http.get(url).status_code == 500
    assert request_token(http, oidc).status_code == 200  # the token endpoint still works

    oidc.clear_faults()
    assert http.get(url).json()["issuer"] == oidc.base_url
    for bad in (200, 600, "404", True):
        with pytest.raises(ValueError):
            oidc.set_faults(discovery_status=bad)


@pytest.fixture
def tls_oidc(pki: Pki) -> Iterator[SimulatedProvider]:
    """Over https, asking for client certificates from the test CA (mutual TLS)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.verify_mode = ssl.CERT_OPTIONAL
    provider = SimulatedProvider("oidc", tls=context)
    provider.add_client(CLIENT_ID, SECRET)
    provider.add_client("mtls-client", tls_client_auth_subject_dn="CN=client")
    provider.add_client("other-subject", tls_client_auth_subject_dn="CN=someone-else")
    with provider:
        yield provider


def https_client(pki: Pki, *, cert: tuple[str, str] | None = None) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if cert is not None:
        context.load_cert_chain(*cert)
    return httpx.Client(verify=context, timeout=5.0)


def test_tls_discovery_has_mtls_aliases(tls_oidc: SimulatedProvider, pki: Pki) -> None:
    base = tls_oidc.base_url
    assert base.startswith("https://127.0.0.1:")
    with https_client(pki) as https:
        doc = https.get(base + "/.well-known/openid-configuration").json()
        assert "tls_client_auth" in doc["token_endpoint_auth_methods_supported"]
        aliases = doc["mtls_endpoint_aliases"]
        assert aliases == {"token_endpoint": base + "/mtls/token",
                           "introspection_endpoint": base + "/mtls/token/introspection",
                           "revocation_endpoint": base + "/mtls/token/revocation"}

        issued = https.post(aliases["token_endpoint"], data={"grant_type": "client_credentials"},
                            headers={"Authorization": basic(CLIENT_ID, SECRET)})
        assert issued.status_code == 200
        assert tls_oidc.token_requests()[-1].path == "/mtls/token"
        token = issued.json()["access_token"]
        active = https.post(aliases["introspection_endpoint"], data={"token": token},
                            headers={"Authorization": basic(CLIENT_ID, SECRET)})
        assert active.json()["active"] is True
    with httpx.Client(timeout=5.0) as plain, pytest.raises(httpx.HTTPError):
        plain.get(base.replace("https", "http") + "/jwks")


def test_tls_client_auth(tls_oidc: SimulatedProvider, pki: Pki) -> None:
    form = {"grant_type": "client_credentials", "client_id": "mtls-client"}
    mtls_token = tls_oidc.base_url + "/mtls/token"
    with https_client(pki, cert=(str(pki.client_cert), str(pki.client_key))) as mtls:
        issued = mtls.post(mtls_token, data=form)
        assert issued.status_code == 200, issued.text
        record = tls_oidc.token_requests()[-1]
        assert (record.auth_method, record.client_id) == ("tls_client_auth", "mtls-client")
        # The certificate is valid, but was not issued to this client.
        other = mtls.post(mtls_token, data={**form, "client_id": "other-subject"})
        assert "subject" in refusal(other)
        # A secret client still needs its secret, certificate or not.
        assert mtls.post(mtls_token, data={**form, "client_id": CLIENT_ID}).status_code == 401
    with https_client(pki) as no_cert:
        assert "no client authentication" in refusal(no_cert.post(mtls_token, data=form))
    # A certificate from a CA the server does not trust ends the handshake.
    with https_client(pki, cert=(str(pki.rogue_cert), str(pki.rogue_key))) as rogue, \
            pytest.raises(httpx.HTTPError):
        rogue.post(mtls_token, data=form)
    assert tls_oidc.issued_token_count() == 1


# --- client authentication -----------------------------------------------------------


def test_each_client_uses_its_registered_method(
    oidc: SimulatedProvider, http: httpx.Client
) -> None:
    assert request_token(http, oidc).status_code == 200  # Basic, as registered
    post = request_token(http, oidc, auth_method="client_secret_post")
    assert (post.status_code, post.json()["error"]) == (401, "invalid_client")
    assert "registered for client_secret_basic" in post.json()["error_description"]

    oidc.add_client("poster", "poster-secret-1234", auth_method="client_secret_post")
    assert request_token(http, oidc, client_id="poster", secret="poster-secret-1234",
                         auth_method="client_secret_post").status_code == 200
    wrong = request_token(http, oidc, secret="not-the-secret")
    assert wrong.headers["www-authenticate"] == 'Basic realm="oidc"'
    assert SECRET not in repr(oidc.token_requests())


@pytest.mark.parametrize("audience", ["issuer", "token_endpoint", "in_array"])
def test_client_secret_jwt(audience: str, oidc: SimulatedProvider, http: httpx.Client) -> None:
    audiences: dict[str, str | list[str]] = {
        "issuer": oidc.base_url, "token_endpoint": oidc.token_url,
        "in_array": ["https://elsewhere.example", oidc.token_url]}
    aud = audiences[audience]
    response = post_assertion(http, oidc.token_url,
                              assertion(hs_key(), HS_CLIENT, aud, alg="HS256"))

    assert response.status_code == 200, response.text
    record = oidc.token_requests()[-1]
    assert (record.auth_method, record.client_id, record.issued) == (
        "client_secret_jwt", HS_CLIENT, True)
    assert "client_assertion" in record.form_keys
    assert HS_SECRET not in repr(oidc.token_requests())


@pytest.mark.parametrize("which", ["rsa", "ec", "ps256"])
def test_private_key_jwt(
    which: str, oidc: SimulatedProvider, http: httpx.Client, rsa_key: RSAKey, ec_key: ECKey
) -> None:
    cases: dict[str, tuple[RSAKey | ECKey, str, str]] = {
        "rsa": (rsa_key, "rsa-client", "RS256"),
        "ec": (ec_key, "ec-client", "ES256"),
        "ps256": (rsa_key, "rsa-client", "PS256")}
    key, client_id, alg = cases[which]
    signed = assertion(key, client_id, oidc.token_url, alg=alg)

    # client_id may be left out of the form (RFC 7523 §3): sub names the client.
    response = post_assertion(http, oidc.token_url, signed)

    assert response.status_code == 200, response.text
    assert oidc.token_requests()[-1].auth_method == "private_key_jwt"
    assert call_api(http, oidc, response.json()["access_token"]).json()["client_id"] == client_id


def refusal(response: httpx.Response) -> str:
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["error"] == "invalid_client"
    description = body["error_description"]
    assert isinstance(description, str)
    return description


def test_assertion_claims_are_checked(
    oidc: SimulatedProvider, http: httpx.Client, rsa_key: RSAKey, ec_key: ECKey
) -> None:
    url, now = oidc.token_url, int(time.time())

    def hs(**kwargs: Any) -> str:
        return refusal(post_assertion(http, url, assertion(
            hs_key(), HS_CLIENT, kwargs.pop("aud", url), alg="HS256", **kwargs),
            client_id=HS_CLIENT))

    assert "aud" in hs(aud="https://elsewhere.example/token")
    assert "aud" in hs(aud=[oidc.base_url + "/token/introspection"])
    assert "iss and sub" in hs(iss="someone-else")
    assert "iss and sub" in hs(sub="someone-else")
    assert "60 s" in hs(lifetime=61)
    assert "expired" in hs(iat=now - 120)
    assert "iat is in the future" in hs(iat=now + 30, lifetime=30)
    assert "exp and iat" in hs(drop=("iat",))
    assert "exp and iat" in hs(drop=("exp",))
    assert "exp and iat" in hs(exp=float("nan"))
    assert "jti is required" in hs(drop=("jti",))

    wrong_secret = OctKey.import_key(b"another-secret-of-enough-bytes")
    assert "signed with the client's key" in refusal(post_assertion(
        http, url, assertion(wrong_secret, HS_CLIENT, url, alg="HS256")))
    # The right client, the key of another one (and the kid it names is not registered).
    assert "signed with the client's key" in refusal(post_assertion(
        http, url, assertion(ec_key, "rsa-client", url, alg="ES256")))
    # An RSA client cannot switch to HS256 (with its public key as the secret, say).
    assert "registered for private_key_jwt" in refusal(post_assertion(
        http, url, assertion(hs_key(), "rsa-client", url, alg="HS256")))
    # The form's client_id picks the key, so another client's assertion fails to verify.
    assert "signed with the client's key" in refusal(post_assertion(
        http, url, assertion(rsa_key, "rsa-client", url, alg="RS256"), client_id="ec-client"))
    assert oidc.issued_token_count() == 0


def test_replayed_jti_is_refused(
    oidc: SimulatedProvider, http: httpx.Client, rsa_key: RSAKey
) -> None:
    signed = assertion(rsa_key, "rsa-client", oidc.token_url, alg="RS256", jti="once-only")

    assert post_assertion(http, oidc.token_url, signed).status_code == 200
    assert "jti has already been used" in refusal(post_assertion(http, oidc.token_url, signed))
    # The same jti from another client is another assertion.
    other = assertion(hs_key(), HS_CLIENT, oidc.token_url, alg="HS256", jti="once-only")
    assert post_assertion(http, oidc.token_url, other).status_code == 200


def test_replayed_jti_fault(oidc: SimulatedProvider, http: httpx.Client, ec_key: ECKey) -> None:
    oidc.set_faults(replayed_jti=True)

    fresh = assertion(ec_key, "ec-client", oidc.token_url, alg="ES256")
    assert "jti has already been used" in refusal(post_assertion(http, oidc.token_url, fresh))
    assert request_token(http, oidc).status_code == 200  # secrets are unaffected

    oidc.clear_faults()
    again = assertion(ec_key, "ec-client", oidc.token_url, alg="ES256")
    assert post_assertion(http, oidc.token_url, again).status_code == 200


def test_malformed_client_authentication(oidc: SimulatedProvider, http: httpx.Client) -> None:
    signed = assertion(hs_key(), HS_CLIENT, oidc.token_url, alg="HS256")

    both = http.post(oidc.token_url, headers={"Authorization": basic(HS_CLIENT, HS_SECRET)},
                     data={"grant_type": "client_credentials",
                           "client_assertion_type": JWT_BEARER, "client_assertion": signed})
    assert (both.status_code, both.json()["error"]) == (400, "invalid_request")
    wrong_type = post_assertion(http, oidc.token_url, signed,
                                client_assertion_type="urn:example:saml")
    assert (wrong_type.status_code, wrong_type.json()["error"]) == (400, "invalid_request")
    garbage = post_assertion(http, oidc.token_url, "not.a.jwt", client_id="rsa-client")
    assert "signed with the client's key" in refusal(garbage)
    # Unreadable, it cannot say HS256, so it is no client_secret_jwt assertion either.
    assert refusal(post_assertion(http, oidc.token_url, "not.a.jwt", client_id=HS_CLIENT))


def test_add_client_validates(make: Factory) -> None:
    oidc = make("oidc")
    with pytest.raises(ValueError, match="need jwks"):
        oidc.add_client("keyless", auth_method="private_key_jwt")
    with pytest.raises(ValueError, match="not a usable JWK"):
        oidc.add_client("broken", jwks={"kty": "EC"})
    with pytest.raises(ValueError, match="need a client secret"):
        oidc.add_client("secretless", auth_method="client_secret_jwt")
    with pytest.raises(ValueError, match="at least 14 bytes"):
        oidc.add_client("short", "13-bytes-only", auth_method="client_secret_jwt")
    with pytest.raises(ValueError, match="RFC 4514"):
        oidc.add_client("dn", tls_client_auth_subject_dn="not a distinguished name")
    with pytest.raises(ValueError, match="need tls_client_auth_subject_dn"):
        oidc.add_client("certless", auth_method="tls_client_auth")
    simplifi = make("simplifi")
    with pytest.raises(ValueError, match="does not support private_key_jwt"):
        simplifi.add_client("svc", jwks={"kty": "EC"})


# --- tokens, introspection, revocation ---------------------------------------------


def test_access_token_is_a_jwt_checkable_with_jwks_uri(
    oidc: SimulatedProvider, http: httpx.Client
) -> None:
    token = get_token(http, oidc)
    keys = KeySet.import_key_set(http.get(oidc.base_url + "/jwks").json())

    decoded = jwt.decode(token, keys, algorithms=["ES256"])

    assert decoded.header["typ"] == "at+jwt"
    claims = decoded.claims
    assert (claims["iss"], claims["sub"], claims["client_id"], claims["scope"]) == (
        oidc.base_url, CLIENT_ID, CLIENT_ID, "read")
    assert claims["exp"] - claims["iat"] == 300


def introspect(http: httpx.Client, provider: SimulatedProvider, token: str,
               **kwargs: Any) -> httpx.Response:
    kwargs.setdefault("headers", {"Authorization": basic(CLIENT_ID, SECRET)})
    return http.post(provider.base_url + "/token/introspection",
                     data={"token": token, **kwargs.pop("data", {})}, **kwargs)


def test_introspection(oidc: SimulatedProvider, http: httpx.Client) -> None:
    token = get_token(http, oidc)
    oidc.add_client("rs", "resource-server-secret", scopes="")

    active = introspect(http, oidc, token,
                        headers={"Authorization": basic("rs", "resource-server-secret")})

    assert active.status_code == 200
    assert active.headers["cache-control"] == "no-store"
    body = active.json()
    assert body["active"] is True
    assert (body["client_id"], body["scope"], body["token_type"]) == (CLIENT_ID, "read",
                                                                      "Bearer")
    assert 295 <= body["exp"] - time.time() <= 300
    assert body["exp"] - body["iat"] == 300

    assert introspect(http, oidc, "not-a-token").json() == {"active": False}
    oidc.revoke_all()
    assert introspect(http, oidc, token).json() == {"active": False}


def test_introspection_refuses_unauthenticated_callers(
    oidc: SimulatedProvider, http: httpx.Client, ec_key: ECKey
) -> None:
    token = get_token(http, oidc)
    url = oidc.base_url + "/token/introspection"

    nobody = introspect(http, oidc, token, headers={})
    assert nobody.status_code == 401 and nobody.json()["error"] == "invalid_client"
    wrong = introspect(http, oidc, token, headers={"Authorization": basic(CLIENT_ID, "x")})
    assert wrong.status_code == 401
    assert http.post(url, data={}, headers={
        "Authorization": basic(CLIENT_ID, SECRET)}).status_code == 400  # no token
    assert http.get(url).status_code == 405

    # A key client authenticates to the introspection endpoint with an assertion for it.
    for_introspection = assertion(ec_key, "ec-client", url, alg="ES256")
    by_key = introspect(http, oidc, token, headers={}, data={
        "client_assertion_type": JWT_BEARER, "client_assertion": for_introspection})
    assert by_key.json()["active"] is True
    # ...and an assertion addressed to the token endpoint is not accepted there.
    misaddressed = assertion(ec_key, "ec-client", oidc.token_url, alg="ES256")
    assert "aud" in refusal(introspect(http, oidc, token, headers={}, data={
        "client_assertion_type": JWT_BEARER, "client_assertion": misaddressed}))


def test_revocation_endpoint(oidc: SimulatedProvider, http: httpx.Client) -> None:
    token = get_token(http, oidc)
    url = oidc.base_url + "/token/revocation"
    auth = {"Authorization": basic(CLIENT_ID, SECRET)}

    assert http.post(url, data={"token": token},
                     headers={"Authorization": basic(CLIENT_ID, "x")}).status_code == 401
    assert call_api(http, oidc, token).status_code == 200

    assert http.post(url, data={"token": token}, headers=auth).status_code == 200
    assert http.post(url, data={"token": "unknown"}, headers=auth).status_code == 200

    assert_refused(call_api(http, oidc, token), "revoked")
    assert introspect(http, oidc, token).json() == {"active": False}


def test_scopes(oidc: SimulatedProvider, http: httpx.Client) -> None:
    oidc.add_client("rw", "read-write-secret", scopes="read write")
    both = request_token(http, oidc, client_id="rw", secret="read-write-secret")
    assert both.json()["scope"] == "read write"  # nothing asked: all it may have
    narrow = request_token(http, oidc, client_id="rw", secret="read-write-secret",
                           form={"scope": "write"})
    assert narrow.json()["scope"] == "write"
    over = request_token(http, oidc, form={"scope": "write"})
    assert (over.status_code, over.json()["error"]) == (400, "invalid_scope")


def test_not_a_seed_vendor() -> None:
    assert "oidc" not in KINDS
    assert "oidc" not in Simulation().providers
