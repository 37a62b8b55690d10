"""A generic, standards-following authorization server: OpenID Connect discovery,
JWT client authentication, introspection and revocation (kind ``oidc``).

No seed document: it follows the standards, checked the way node
oidc-provider and Keycloak check them, so the exporter's discovery, client
assertions and introspection probe can be tested without a third-party
server. It is not one of the five seed vendors (not in ``VENDORS``, ``KINDS``
or ``--demo``); start it on its own::

    provider = SimulatedProvider("oidc").start()          # tls=ssl_context for https
    provider.add_client("app", "secret-of-14-bytes+")     # client_secret_basic
    provider.add_client("svc", jwks=public_jwk)           # private_key_jwt
    provider.add_client("hs", "secret-of-14-bytes+", auth_method="client_secret_jwt")
    provider.add_client("mtls", tls_client_auth_subject_dn="CN=client")  # tls_client_auth
    provider.base_url                                     # the issuer

For ``tls_client_auth`` the server context must ask for client certificates
(``verify_mode = ssl.CERT_OPTIONAL`` with the clients' CA loaded).

Served at the issuer (the base URL)::

    GET  /.well-known/openid-configuration    OpenID Connect Discovery 1.0
    GET  /.well-known/oauth-authorization-server   RFC 8414, the same document
    POST /token                               client credentials grant (RFC 6749 §4.4)
    POST /mtls/token                          with TLS: the RFC 8705 §5 alias, same behaviour
    POST /token/introspection                 RFC 7662: active, scope, client_id, exp, ...
    POST /token/revocation                    RFC 7009
    GET  /jwks                                the key that signs its access tokens
    GET  /api/whoami                          a protected resource (RFC 6750 errors)

Client authentication: ``client_secret_basic`` (the default),
``client_secret_post``, ``client_secret_jwt`` (HS256 with the secret) and
``private_key_jwt`` (RS256, PS256, ES256 with a registered public JWK, chosen
by ``kid``) and, over TLS, ``tls_client_auth`` (RFC 8705 §2.1: a certificate
the handshake verified, whose subject DN is the registered one; no secret).
Each client uses the one method it was registered with. An
assertion (RFC 7523 §3) needs ``iss`` = ``sub`` = client_id; ``aud`` naming the
issuer or the URL called, as a string or in an array (oidc-provider accepts
either); ``exp`` in the future and at most 60 s after ``iat`` (Keycloak's
limit); and a ``jti`` never seen before from that client. Every refusal is
``invalid_client`` with the reason in ``error_description``.

Access tokens are RFC 9068 JWTs (``typ: at+jwt``) signed with a fresh ES256
key per provider, so a resource server can check them against ``jwks_uri``.

Faults (``set_faults``): ``wrong_issuer`` (discovery names another issuer),
``discovery_status`` (discovery answers 404, 500, ...), ``replayed_jti``
(every assertion is refused as a replay).
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any, TypeGuard

from cryptography import x509
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, OctKey

from exporter.simulator.engine import NO_STORE, ClientAuth, Request, Response, json_response
from exporter.simulator.vendors.base import Vendor

if TYPE_CHECKING:
    from exporter.simulator.engine import Client, Engine

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SECRET_ALGORITHMS = ("HS256",)
KEY_ALGORITHMS = ("RS256", "PS256", "ES256")
#: Keycloak's rule: an assertion lives at most this long after its iat.
MAX_ASSERTION_LIFETIME = 60
#: Clock skew allowed for an iat slightly in the future.
CLOCK_SKEW = 5

DISCOVERY_PATHS = ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server")
TOKEN_PATH = "/token"
MTLS_PREFIX = "/mtls"
INTROSPECTION_PATH = "/token/introspection"
REVOCATION_PATH = "/token/revocation"
JWKS_PATH = "/jwks"
RESOURCE_PATH = "/api/whoami"


class GenericOidc(Vendor):
    kind = "oidc"
    seed = ""  # none: RFC 6749, 7009, 7523, 7662, 8414, 8705, 9068, OIDC Discovery 1.0
    token_path = TOKEN_PATH
    auth_method = "client_secret_basic"
    lifetime = 300
    default_scopes = "read"
    invalid_client_message = "client authentication failed"

    def __init__(self) -> None:
        self._signing_key = ECKey.generate_key(
            "P-256", parameters={"kid": secrets.token_hex(8), "use": "sig", "alg": "ES256"}
        )
        # (client_id, jti) -> the assertion's exp: remembered until it could
        # no longer be accepted anyway. Guarded by the engine's lock.
        self._seen_jti: dict[tuple[str, str], float] = {}

    # --- client authentication -------------------------------------------------

    def auth_methods(self) -> tuple[str, ...]:
        return ("client_secret_basic", "client_secret_post", "client_secret_jwt",
                "private_key_jwt", "tls_client_auth")

    def check_client(self, client: Client) -> None:
        # joserfc refuses shorter HMAC keys (RFC 7518 §3.2 wants at least the
        # hash size; it warns below 112 bits), so say so now rather than 500 later.
        if client.auth_method == "client_secret_jwt" and len((client.secret or "").encode()) < 14:
            raise ValueError("client_secret_jwt needs a client secret of at least 14 bytes")
        if client.tls_subject is not None:
            try:
                x509.Name.from_rfc4514_string(client.tls_subject)
            except ValueError as exc:
                raise ValueError(f"tls_client_auth_subject_dn is no RFC 4514 name: {exc}") from None
        if client.jwks is not None:
            try:
                KeySet.import_key_set(dict(client.jwks))  # type: ignore[arg-type]
            except (JoseError, ValueError, TypeError) as exc:
                raise ValueError(f"jwks is not a usable JWK Set: {exc}") from None

    def read_client_auth(
        self, headers: Mapping[str, str], form: Mapping[str, str],
        client_cert: bytes | None = None,
    ) -> ClientAuth:
        auth = super().read_client_auth(headers, form)
        assertion_type = form.get("client_assertion_type")
        assertion = form.get("client_assertion")
        if assertion_type is None and assertion is None:
            if auth.method == "none" and client_cert is not None:
                # RFC 8705 §2: the certificate authenticates, client_id names the client.
                return ClientAuth("tls_client_auth", auth.client_id, certificate=client_cert)
            return auth
        if auth.method != "none":
            return ClientAuth(auth.method, auth.client_id, None,
                              "more than one client authentication method was used")
        if assertion_type != JWT_BEARER or not assertion:
            return ClientAuth("private_key_jwt", form.get("client_id"), None,
                              f"client_assertion_type must be {JWT_BEARER} "
                              "with a client_assertion")
        header, claims = _unverified(assertion)
        method = ("client_secret_jwt" if str(header.get("alg", "")).startswith("HS")
                  else "private_key_jwt")
        # RFC 7523 §3: client_id may be left out; the assertion's sub names the client.
        client_id = form.get("client_id")
        if client_id is None and isinstance(claims.get("sub"), str):
            client_id = claims["sub"]
        return ClientAuth(method, client_id, assertion=assertion)

    def verify_assertion(
        self, client_id: str, client: Client, assertion: str, audiences: Collection[str],
        now: float, *, replayed: bool = False,
    ) -> str:
        key: OctKey | KeySet
        algorithms: tuple[str, ...]
        if client.auth_method == "client_secret_jwt":
            key, algorithms = OctKey.import_key((client.secret or "").encode()), SECRET_ALGORITHMS
        else:
            key = KeySet.import_key_set(dict(client.jwks or {}))  # type: ignore[arg-type]
            algorithms = KEY_ALGORITHMS
        try:
            claims = jwt.decode(assertion, key, algorithms=list(algorithms)).claims
        except (JoseError, ValueError):
            return ("the client assertion is not a JWT signed with the client's key "
                    f"({', '.join(algorithms)})")
        if claims.get("iss") != client_id or claims.get("sub") != client_id:
            return "iss and sub must both be the client_id"
        audience = claims.get("aud")
        if not any(value in audiences
                   for value in (audience if isinstance(audience, list) else [audience])):
            return "aud must be the issuer or the endpoint called"
        exp, iat = claims.get("exp"), claims.get("iat")
        if not _is_time(exp) or not _is_time(iat):
            return "exp and iat are required NumericDates"
        if exp <= now:
            return "the client assertion has expired"
        if exp - iat > MAX_ASSERTION_LIFETIME:
            return f"exp may be at most {MAX_ASSERTION_LIFETIME} s after iat"
        if iat > now + CLOCK_SKEW:
            return "iat is in the future"
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            return "jti is required"
        for seen in [seen for seen, until in self._seen_jti.items() if until <= now]:
            del self._seen_jti[seen]
        if replayed or (client_id, jti) in self._seen_jti:
            return "jti has already been used"
        self._seen_jti[(client_id, jti)] = float(exp)
        return ""

    def verify_certificate(self, client: Client, certificate: bytes | None) -> str:
        # The TLS handshake already checked the chain against the server's CAs;
        # what is left is that it was issued to this client (RFC 8705 §2.1.2).
        if certificate is None or client.tls_subject is None:
            return "no client certificate was presented"
        subject = x509.load_der_x509_certificate(certificate).subject
        if subject != x509.Name.from_rfc4514_string(client.tls_subject):
            return "the client certificate's subject is not the registered one"
        return ""

    # --- token endpoint ----------------------------------------------------------

    def is_token_path(self, path: str) -> bool:
        return path in (TOKEN_PATH, MTLS_PREFIX + TOKEN_PATH)

    def granted_scope(self, allowed: tuple[str, ...], requested: str | None) -> str | None:
        # Nothing asked: everything the client is allowed (Keycloak's default scopes).
        if not (requested or "").split():
            return " ".join(allowed)
        return super().granted_scope(allowed, requested)

    def mint_token(
        self, issuer: str | None, client_id: str, scope: str, now: float, lifetime: int
    ) -> tuple[str, float]:
        iat = int(now)
        claims = {
            "iss": issuer, "sub": client_id, "aud": issuer, "client_id": client_id,
            "scope": scope, "iat": iat, "exp": iat + lifetime, "jti": secrets.token_urlsafe(16),
        }
        header = {"alg": "ES256", "kid": self._signing_key.kid, "typ": "at+jwt"}
        return jwt.encode(header, claims, self._signing_key, algorithms=["ES256"]), float(
            iat + lifetime
        )

    def token_body(self, token: str, life: dict[str, Any], scope: str) -> dict[str, Any]:
        body = {"access_token": token, "token_type": "Bearer", **life}
        return {**body, "scope": scope} if scope else body

    def error_body(self, code: str, message: str) -> dict[str, str]:
        return {"error": code, "error_description": message} if message else {"error": code}

    def invalid_client(self, auth: ClientAuth, reason: str = "") -> Response:
        headers = NO_STORE
        if auth.method == "client_secret_basic":
            headers = (("WWW-Authenticate", 'Basic realm="oidc"'), *headers)
        body = self.error_body("invalid_client", reason or self.invalid_client_message)
        return json_response(401, body, *headers)

    # --- everything else -----------------------------------------------------------

    def route(self, engine: Engine, request: Request, method: str) -> Response | None:
        path = request.path
        if path in DISCOVERY_PATHS:
            return self._discovery(engine, method)
        if path == JWKS_PATH:
            if method != "GET":
                return self.method_not_allowed("GET")
            return json_response(200, {"keys": [self._signing_key.as_dict(private=False)]})
        endpoint = path.removeprefix(MTLS_PREFIX) if engine.base_url.startswith("https") else path
        if endpoint == INTROSPECTION_PATH:
            return self._form_endpoint(engine, request, method, self._introspect)
        if endpoint == REVOCATION_PATH:
            return self._form_endpoint(engine, request, method, self._revoke)
        if path == RESOURCE_PATH:
            return self._resource(engine, request, method)
        return None

    def discovery_document(self, engine: Engine, *, wrong_issuer: bool = False) -> dict[str, Any]:
        base = engine.base_url
        endpoints = {
            "token_endpoint": base + TOKEN_PATH,
            "introspection_endpoint": base + INTROSPECTION_PATH,
            "revocation_endpoint": base + REVOCATION_PATH,
        }
        tls = base.startswith("https://")
        # Without TLS there is no client certificate, so no tls_client_auth.
        methods = [m for m in self.auth_methods() if tls or m != "tls_client_auth"]
        doc: dict[str, Any] = {
            "issuer": base + "/wrong-issuer" if wrong_issuer else base,
            "authorization_endpoint": base + "/authorize",  # required by OIDC; not served
            **endpoints,
            "jwks_uri": base + JWKS_PATH,
            "grant_types_supported": ["client_credentials"],
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
            "scopes_supported": ["read", "write"],
            "token_endpoint_auth_methods_supported": methods,
            "token_endpoint_auth_signing_alg_values_supported": [*SECRET_ALGORITHMS,
                                                                 *KEY_ALGORITHMS],
            "introspection_endpoint_auth_methods_supported": methods,
            "revocation_endpoint_auth_methods_supported": methods,
        }
        if tls:
            doc["mtls_endpoint_aliases"] = {
                name: base + MTLS_PREFIX + url[len(base):] for name, url in endpoints.items()
            }
        return doc

    def _discovery(self, engine: Engine, method: str) -> Response:
        if method != "GET":
            return self.method_not_allowed("GET")
        faults = engine.faults
        if faults.discovery_status is not None:
            status = faults.discovery_status
            code = "not_found" if status == 404 else "server_error" if status >= 500 else "error"
            return json_response(status, {"error": code})
        doc = self.discovery_document(engine, wrong_issuer=faults.wrong_issuer)
        return json_response(200, doc, ("Cache-Control", "max-age=300"))

    def _form_endpoint(
        self, engine: Engine, request: Request, method: str,
        answer: Callable[[Engine, ClientAuth, str, str], Response],
    ) -> Response:
        """An RFC 7662 / 7009 endpoint: a POSTed form from an authenticated client."""
        read = self.read_form(request, method)
        if isinstance(read, Response):
            return read
        form, auth = read
        if auth.problem is not None:
            return self.oauth_error(400, "invalid_request", auth.problem)
        endpoint = engine.base_url + request.path
        if "token" not in form:
            return self.oauth_error(400, "invalid_request", "The token parameter is required.")
        return answer(engine, auth, form["token"], endpoint)

    def _introspect(self, engine: Engine, auth: ClientAuth, token: str, endpoint: str) -> Response:
        ok, reason = engine.authenticate(auth, endpoint)
        if not ok:
            return self.invalid_client(auth, reason)
        state, record = engine.lookup(token)
        if state != "valid" or record is None:
            # RFC 7662 §2.2: nothing about why, to anyone.
            return json_response(200, {"active": False}, *NO_STORE)
        return json_response(200, {
            "active": True,
            "scope": " ".join(record.scopes),
            "client_id": record.client_id,
            "token_type": "Bearer",
            "exp": int(record.expires_at),
            "iat": int(record.issued_at),
            "sub": record.client_id,
            "aud": engine.base_url,
            "iss": engine.base_url,
        }, *NO_STORE)

    def _revoke(self, engine: Engine, auth: ClientAuth, token: str, endpoint: str) -> Response:
        if not engine.revoke_token(auth, token, endpoint):
            return self.invalid_client(auth, "client authentication failed")
        return Response(200)

    def _resource(self, engine: Engine, request: Request, method: str) -> Response:
        if method != "GET":
            return self.method_not_allowed("GET")
        state, record = engine.token_state(request)
        if state == "missing":
            return json_response(401, {"error": "invalid_token"},
                                 ("WWW-Authenticate", 'Bearer realm="oidc"'))
        if state != "valid" or record is None:
            challenge = f'Bearer realm="oidc", error="invalid_token", error_description="{state}"'
            return json_response(401, {"error": "invalid_token"},
                                 ("WWW-Authenticate", challenge))
        return json_response(200, {"client_id": record.client_id,
                                   "scope": " ".join(record.scopes)})


def _unverified(assertion: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and claims of a compact JWS, unverified (to pick the key), or empty."""
    try:
        obj = jws.extract_compact(assertion.encode())
        claims = json.loads(obj.payload or b"")
    except (JoseError, ValueError):
        return {}, {}
    return dict(obj.headers()), claims if isinstance(claims, dict) else {}


def _is_time(value: object) -> TypeGuard[int | float]:
    # NaN would compare false with everything and never expire.
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
