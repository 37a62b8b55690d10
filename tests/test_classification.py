"""The classification table, row by row, from real servers' answers over real HTTP.

Each case is one server's actual answer: status, the headers that matter and
the body bytes as that server writes them (compact JSON where the server
writes it compact), each taken from the server's source or from a published
capture of its answer; ``docs/classification.md`` names the source of each.
Every case is served by a loopback server and read the way the exporter reads
answers: token cases through ``request_token``, probe cases through the
shared HTTP client and ``read_body``, then ``classify_response``. Each case
also names the rule it must be decided by, and every rule has a case.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from exporter.config import Provider, parse_config
from exporter.errors import (
    RULES,
    ErrorClass,
    Evidence,
    classify_response,
    explain,
    read_answer,
)
from exporter.http import new_http_client, read_body
from exporter.tokens import TokenError, request_token
from tests.scripted import Answer, scripted_server

ROOT = Path(__file__).resolve().parent.parent
E = ErrorClass
JSON = {"Content-Type": "application/json"}
SECRET = "classification-secret-T4c"


@dataclass(frozen=True)
class Case:
    server: str
    context: str
    status: int
    body: bytes
    cls: ErrorClass
    rule: str
    headers: dict[str, str] = field(default_factory=dict)


def nginx_page(title: str, *lines: str) -> bytes:
    """nginx's built-in error page (src/http/ngx_http_special_response.c), CRLF and all."""
    body = "".join(f"<center>{line}</center>\r\n" for line in lines)
    return (f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n{body}"
            "<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n").encode()


def google(error: dict[str, object], indent: int = 2) -> bytes:
    """Google APIs' error body: indented JSON and a final newline, as they send it."""
    return json.dumps({"error": error}, indent=indent).encode() + b"\n"


GOOGLE_401 = google({
    "code": 401,
    "message": "Request had invalid authentication credentials. Expected OAuth 2 access token, "
               "login cookie or other valid authentication credential. See "
               "https://developers.google.com/identity/sign-in/web/devconsole-project.",
    "errors": [{"message": "Invalid Credentials", "domain": "global", "reason": "authError",
                "location": "Authorization", "locationType": "header"}],
    "status": "UNAUTHENTICATED",
})
GOOGLE_403_SCOPE = google({
    "code": 403,
    "message": "Request had insufficient authentication scopes.",
    "errors": [{"message": "Insufficient Permission", "domain": "global",
                "reason": "insufficientPermissions"}],
    "status": "PERMISSION_DENIED",
})
GOOGLE_403_RATE = google({
    "errors": [{"domain": "usageLimits", "reason": "userRateLimitExceeded",
                "message": "User Rate Limit Exceeded"}],
    "code": 403,
    "message": "User Rate Limit Exceeded",
}, indent=1)
GRAPH_INNER = (b'"innerError":{"date":"2026-11-30T10:00:00","request-id":'
               b'"2a4b9c1e-5d7f-4e1a-9b3c-8d6e0f1a2b3c","client-request-id":'
               b'"2a4b9c1e-5d7f-4e1a-9b3c-8d6e0f1a2b3c"}')
SPRING_BOOT_401 = (b'{"timestamp":"2026-11-30T10:00:00.000+00:00","status":401,'
                   b'"error":"Unauthorized","path":"/oauth/token"}')

# name -> the server's answer, the class, and the rule that must decide it.
TOKEN_CASES: dict[str, Case] = {
    "glewlwyd-wrong-secret": Case(
        "Glewlwyd", "token", 403, b"", E.INVALID_CLIENT, "token-401-403"),
    "glewlwyd-scope-invalid": Case(
        "Glewlwyd", "token", 400, b'{"error":"scope_invalid"}', E.INVALID_SCOPE,
        "glewlwyd-scope-invalid", JSON),
    "glewlwyd-grant-not-allowed": Case(
        "Glewlwyd", "token", 400, b'{"error":"authorization_type_invalid"}',
        E.UNAUTHORIZED_CLIENT, "glewlwyd-authorization-type-invalid", JSON),
    "glewlwyd-device-expired": Case(
        "Glewlwyd", "token", 400, b'{"error":"expired_token"}', E.TOKEN_EXPIRED,
        "expired-spellings", JSON),
    "glewlwyd-bad-parameters": Case(
        "Glewlwyd", "token", 400, b"", E.INVALID_REQUEST, "token-400"),
    "dot-wrong-secret": Case(
        "django-oauth-toolkit (oauthlib)", "token", 401, b'{"error": "invalid_client"}',
        E.INVALID_CLIENT, "class-name",
        {**JSON, "WWW-Authenticate": 'Bearer error="invalid_client"'}),
    "oidc-provider-wrong-secret": Case(
        "node oidc-provider", "token", 401,
        b'{"error":"invalid_client","error_description":"client authentication failed"}',
        E.INVALID_CLIENT, "class-name", JSON),
    "keycloak-legacy-wrong-secret": Case(
        "Keycloak (ClientIdAndSecretAuthenticator, before invalid_client)", "token", 401,
        b'{"error":"unauthorized_client","error_description":"Invalid client secret"}',
        E.INVALID_CLIENT, "keycloak-unauthorized-client-401", JSON),
    "keycloak-setup-required": Case(
        "Keycloak", "token", 400,
        b'{"error":"unauthorized_client","error_description":"Client credentials setup required"}',
        E.UNAUTHORIZED_CLIENT, "class-name", JSON),
    "auth0-wrong-secret": Case(
        "Auth0", "token", 401, b'{"error":"access_denied","error_description":"Unauthorized"}',
        E.INVALID_CLIENT, "auth0-access-denied-401", JSON),
    "auth0-no-client-grant": Case(
        "Auth0", "token", 403,
        b'{"error":"access_denied","error_description":"Client is not authorized to access '
        b'\\"https://tenant.example.auth0.com/api/v2/\\". You need to create a '
        b'\\"client-grant\\" associated to this API. See: '
        b'https://auth0.com/docs/api/v2#!/Client_Grants/post_client_grants"}',
        E.UNAUTHORIZED_CLIENT, "auth0-access-denied", JSON),
    "github-incorrect-credentials": Case(
        "GitHub (OAuth app token endpoint, HTTP 200)", "token", 200,
        b'{"error":"incorrect_client_credentials","error_description":"The client_id and/or '
        b'client_secret passed are incorrect.","error_uri":"https://docs.github.com/apps/'
        b'managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/'
        b'#incorrect-client-credentials"}',
        E.INVALID_CLIENT, "client-credential-spellings", JSON),
    "spring-oauth2-basic-auth": Case(
        "Spring Security OAuth2 /oauth/token (Spring Boot error body)", "token", 401,
        SPRING_BOOT_401, E.INVALID_CLIENT, "client-credential-spellings",
        {**JSON, "WWW-Authenticate": 'Basic realm="oauth2/client"'}),
    "nginx-plain-http-to-https": Case(
        "nginx", "token", 400,
        nginx_page("400 The plain HTTP request was sent to HTTPS port", "<h1>400 Bad Request</h1>",
                   "The plain HTTP request was sent to HTTPS port"),
        E.UNEXPECTED_STATUS, "token-400-html", {"Content-Type": "text/html"}),
    "nginx-502": Case(
        "nginx", "token", 502, nginx_page("502 Bad Gateway", "<h1>502 Bad Gateway</h1>"),
        E.SERVER_ERROR, "status-5xx", {"Content-Type": "text/html"}),
    "simpledocs-rate-limited": Case(
        "SimpleDocs", "token", 429, b'{"error":"rate_limited"}', E.RATE_LIMITED, "class-name",
        {**JSON, "Retry-After": "6"}),
    "bare-429": Case(
        "SimpleDocs behind a gateway", "token", 429, b"", E.RATE_LIMITED, "status-429",
        {"Retry-After": "6"}),
    "glewlwyd-device-slow-down": Case(
        "Glewlwyd", "token", 400, b'{"error":"slow_down"}', E.RATE_LIMITED,
        "rate-limit-spellings", JSON),
    "redirect-to-login": Case(
        "any web server", "token", 302, b"", E.UNEXPECTED_STATUS, "other-status",
        {"Location": "https://sso.example/login"}),
}

PROBE_CASES: dict[str, Case] = {
    "dot-revoked-session-auth-first": Case(
        "django-oauth-toolkit + DRF (SessionAuthentication first)", "probe", 403,
        b'{"detail":"Authentication credentials were not provided."}', E.INVALID_TOKEN,
        "text-not-authenticated", JSON),
    "dot-revoked-oauth2-auth-first": Case(
        "django-oauth-toolkit + DRF (OAuth2Authentication first)", "probe", 401,
        b'{"detail":"Authentication credentials were not provided."}', E.INVALID_TOKEN,
        "challenge", {**JSON, "WWW-Authenticate": 'Bearer realm="api",error="invalid_token",'
                      'error_description="The access token is invalid."'}),
    "dot-missing-scope": Case(
        "django-oauth-toolkit + DRF (TokenHasScope)", "probe", 403,
        b'{"detail":"You do not have permission to perform this action."}',
        E.INSUFFICIENT_SCOPE, "text-no-permission", JSON),
    "dot-revoked-in-german": Case(
        "django-oauth-toolkit + DRF, LANGUAGE_CODE de", "probe", 403,
        b'{"detail":"Anmeldedaten fehlen."}', E.INVALID_TOKEN, "probe-403", JSON),
    "drf-token-auth": Case(
        "DRF TokenAuthentication", "probe", 401, b'{"detail":"Invalid token."}',
        E.INVALID_TOKEN, "text-not-authenticated", {**JSON, "WWW-Authenticate": "Token"}),
    "simplejwt-expired": Case(
        "DRF Simple JWT", "probe", 401,
        b'{"detail":"Given token not valid for any token type","code":"token_not_valid",'
        b'"messages":[{"token_class":"AccessToken","token_type":"access",'
        b'"message":"Token is expired"}]}',
        E.INVALID_TOKEN, "token-refused-spellings",
        {**JSON, "WWW-Authenticate": 'Bearer realm="api"'}),
    "oidc-provider-userinfo-revoked": Case(
        "node oidc-provider", "probe", 401,
        b'{"error":"invalid_token","error_description":"invalid token provided"}',
        E.INVALID_TOKEN, "class-name",
        {**JSON, "WWW-Authenticate": 'Bearer realm="http://127.0.0.1:3000", '
         'error="invalid_token", error_description="invalid token provided"'}),
    "oidc-provider-insufficient-scope": Case(
        "node oidc-provider", "probe", 403,
        b'{"error":"insufficient_scope","error_description":"access token missing required '
        b'scope","scope":"api:write"}',
        E.INSUFFICIENT_SCOPE, "class-name",
        {**JSON, "WWW-Authenticate": 'Bearer realm="http://127.0.0.1:3000", '
         'error="insufficient_scope", error_description="access token missing required '
         'scope", scope="api:write"'}),
    "aspnet-jwt-expired": Case(
        "ASP.NET Core JwtBearer (IdentityServer APIs)", "probe", 401, b"", E.INVALID_TOKEN,
        "challenge", {"WWW-Authenticate": 'Bearer error="invalid_token", error_description='
                      '"The token expired at \'11/30/2026 10:00:00\'"'}),
    "simpledocs-revoked": Case(
        "SimpleDocs", "probe", 401,
        b'{"type":"token_revoked","message":"The token was revoked."}', E.TOKEN_REVOKED,
        "class-name", JSON),
    "graph-expired": Case(
        "Microsoft Graph", "probe", 401,
        b'{"error":{"code":"InvalidAuthenticationToken","message":"Access token has expired '
        b'or is not yet valid.",' + GRAPH_INNER + b"}}",
        E.INVALID_TOKEN, "token-refused-spellings",
        {**JSON, "WWW-Authenticate": 'Bearer realm="", authorization_uri="https://login.'
         'microsoftonline.com/common/oauth2/authorize", client_id="00000003-0000-0000-c000-'
         '000000000000"'}),
    "graph-denied": Case(
        "Microsoft Graph", "probe", 403,
        b'{"error":{"code":"Authorization_RequestDenied","message":"Insufficient privileges '
        b'to complete the operation.",' + GRAPH_INNER + b"}}",
        E.INSUFFICIENT_SCOPE, "permission-spellings", JSON),
    "google-401": Case(
        "Google APIs", "probe", 401, GOOGLE_401, E.INVALID_TOKEN, "token-refused-spellings",
        {**JSON, "WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", '
         'error="invalid_token"'}),
    "google-403-scope": Case(
        "Google APIs", "probe", 403, GOOGLE_403_SCOPE, E.INSUFFICIENT_SCOPE,
        "permission-spellings",
        {**JSON, "WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", '
         'error="insufficient_scope", scope="https://www.googleapis.com/auth/drive"'}),
    "google-403-rate": Case(
        "Google APIs (Drive v3)", "probe", 403, GOOGLE_403_RATE, E.RATE_LIMITED,
        "rate-limit-spellings", JSON),
    "dropbox-expired": Case(
        "Dropbox API v2", "probe", 401,
        b'{"error_summary": "expired_access_token/..", "error": {".tag": '
        b'"expired_access_token"}}',
        E.TOKEN_EXPIRED, "expired-spellings", JSON),
    "dropbox-invalid": Case(
        "Dropbox API v2", "probe", 401,
        b'{"error_summary": "invalid_access_token/...", "error": {".tag": '
        b'"invalid_access_token"}}',
        E.INVALID_TOKEN, "token-refused-spellings", JSON),
    "twitter-invalid-or-expired": Case(
        "Twitter API v1.1", "probe", 401,
        b'{"errors":[{"code":89,"message":"Invalid or expired token."}]}', E.INVALID_TOKEN,
        "text-invalid-or-expired", JSON),
    "github-bad-credentials": Case(
        "GitHub REST API", "probe", 401,
        b'{"message":"Bad credentials","documentation_url":"https://docs.github.com/rest",'
        b'"status":"401"}',
        E.INVALID_TOKEN, "text-not-authenticated", JSON),
    "aws-cognito-expired": Case(
        "AWS API Gateway (Cognito authorizer)", "probe", 401,
        b'{"message":"The incoming token has expired"}', E.TOKEN_EXPIRED, "text-expired", JSON),
    "aws-unauthorized": Case(
        "AWS API Gateway (Lambda authorizer)", "probe", 401, b'{"message":"Unauthorized"}',
        E.INVALID_TOKEN, "text-not-authenticated", JSON),
    "aws-explicit-deny": Case(
        "AWS API Gateway (Lambda authorizer)", "probe", 403,
        b'{"Message":"User is not authorized to access this resource with an explicit deny"}',
        E.INSUFFICIENT_SCOPE, "text-no-permission", JSON),
    "laravel-unauthenticated": Case(
        "Laravel (Passport, Sanctum)", "probe", 401, b'{"message":"Unauthenticated."}',
        E.INVALID_TOKEN, "text-not-authenticated", JSON),
    "spring-oauth2-access-denied": Case(
        "Spring Security OAuth2 resource server", "probe", 403,
        b'{"error":"access_denied","error_description":"Access is denied"}',
        E.INSUFFICIENT_SCOPE, "spring-access-denied-403", JSON),
    "spring-boot-401": Case(
        "Spring Boot error body", "probe", 401,
        b'{"timestamp":"2026-11-30T10:00:00.000+00:00","status":401,"error":"Unauthorized",'
        b'"path":"/api/v1/orders"}',
        E.INVALID_TOKEN, "token-refused-spellings", JSON),
    "html-login-page": Case(
        "a web app's login page", "probe", 401,
        b"<html><head><title>Login</title></head><body><form>...</form></body></html>",
        E.INVALID_TOKEN, "probe-401", {"Content-Type": "text/html; charset=utf-8"}),
    "nginx-deny": Case(
        "nginx (deny rule)", "probe", 403, nginx_page("403 Forbidden", "<h1>403 Forbidden</h1>"),
        E.UNEXPECTED_STATUS, "probe-403-html", {"Content-Type": "text/html"}),
    "not-found": Case(
        "GitHub REST API", "probe", 404,
        b'{"message":"Not Found","documentation_url":"https://docs.github.com/rest"}',
        E.UNEXPECTED_STATUS, "other-status", JSON),
    "oauth-unavailable": Case(
        "RFC 6749 §4.1.2.1 code", "probe", 503, b'{"error":"temporarily_unavailable"}',
        E.SERVER_ERROR, "unavailable-spellings", JSON),
    "revoked-spelling": Case(
        "RFC 7009 wording", "probe", 401, b'{"error":"revoked_token"}', E.TOKEN_REVOKED,
        "revoked-spellings", JSON),
}

CASES = {**TOKEN_CASES, **PROBE_CASES}


def provider_for(url: str) -> Provider:
    text = f"providers:\n  - name: p\n    token_url: {url}\n    client_id: c\n" \
        f"    client_secret: {SECRET}\n"
    return parse_config(text, "t.yaml", {}).providers[0]


async def token_error(url: str) -> ErrorClass:
    async with new_http_client() as client:
        try:
            await request_token(client, provider_for(url))
        except TokenError as exc:
            assert SECRET not in str(exc)
            return exc.error
    raise AssertionError("the token request succeeded")


async def probe_answer(url: str) -> tuple[int, httpx.Headers, bytes]:
    async with new_http_client() as client, client.stream(
            "GET", url, headers={"Authorization": "Bearer tok-123"}) as response:
        return response.status_code, response.headers, await read_body(response, 1 << 20)


@pytest.fixture(scope="module")
def served() -> Iterator[str]:
    script = {f"/{name}": Answer(case.status, case.body, case.headers)
              for name, case in CASES.items()}
    with scripted_server(script) as base:
        yield base


@pytest.mark.parametrize("name", sorted(TOKEN_CASES))
def test_token_endpoint_answers(name: str, served: str) -> None:
    case = TOKEN_CASES[name]
    assert asyncio.run(token_error(f"{served}/{name}")) is case.cls
    rule = explain(read_answer(case.status, case.headers, case.body, "token"))
    assert rule.id == case.rule


@pytest.mark.parametrize("name", sorted(PROBE_CASES))
def test_api_answers(name: str, served: str) -> None:
    case = PROBE_CASES[name]
    status, headers, body = asyncio.run(probe_answer(f"{served}/{name}"))
    assert (status, body) == (case.status, case.body)
    assert classify_response(status, headers, body, "probe") is case.cls
    assert explain(read_answer(status, headers, body, "probe")).id == case.rule


def test_every_rule_has_a_real_answer() -> None:
    covered = {case.rule for case in CASES.values()}
    assert {rule.id for rule in RULES} - covered == set()


@pytest.mark.parametrize(("status", "expected"), [
    (401, E.UNEXPECTED_STATUS), (403, E.UNEXPECTED_STATUS), (429, E.RATE_LIMITED)])
def test_a_public_probes_refusal_is_not_about_a_token(status: int,
                                                      expected: ErrorClass) -> None:
    # With no token sent, a bare 401/403 cannot mean our token was refused.
    assert classify_response(status, {}, b"", "probe", bearer=False) is expected
    assert classify_response(status, {}, b"", "probe") is (
        E.INVALID_TOKEN if status != 429 else E.RATE_LIMITED)


REVOKED_CHALLENGE = {"WWW-Authenticate": 'Bearer error="token_revoked"'}


@pytest.mark.parametrize(("headers", "body", "expected"), [
    # The order of evidence: a code in the body beats the header, which beats
    # the body's words, which beat the status.
    (REVOKED_CHALLENGE, b'{"error":"insufficient_scope","message":"Token expired"}',
     E.INSUFFICIENT_SCOPE),
    (REVOKED_CHALLENGE, b'{"message":"Token expired"}', E.TOKEN_REVOKED),
    (REVOKED_CHALLENGE, b"", E.TOKEN_REVOKED),
    ({}, b'{"message":"Token expired"}', E.TOKEN_EXPIRED),
    ({}, b'{"message":"Nothing we know"}', E.INVALID_TOKEN),
    ({"WWW-Authenticate": 'Basic realm="api", Bearer error="token_revoked"'}, b"",
     E.TOKEN_REVOKED),
    ({"WWW-Authenticate": 'Basic realm="api", error="token_revoked"'}, b"", E.INVALID_TOKEN),
])
def test_order_of_evidence(headers: dict[str, str], body: bytes, expected: ErrorClass) -> None:
    assert classify_response(401, headers, body, "probe") is expected


@pytest.mark.parametrize("body", [
    b'{"error": "timeout"}', b'{"error": "no_token"}', b'{"error": "unexpected_status"}',
    b'{"type": "invalid_response"}', b'{"error": "tls_error"}',
])
def test_a_server_cannot_name_our_own_classes(body: bytes) -> None:
    assert classify_response(400, {}, body, "token") is E.INVALID_REQUEST


def test_words_count_only_on_401_and_403() -> None:
    body = b'{"message":"The incoming token has expired"}'
    assert classify_response(401, {}, body, "probe") is E.TOKEN_EXPIRED
    assert classify_response(404, {}, body, "probe") is E.UNEXPECTED_STATUS
    assert classify_response(500, {}, body, "probe") is E.SERVER_ERROR


def _doc_rows() -> dict[str, tuple[str, str]]:
    """``rule id -> (looks at, class)`` from the table in docs/classification.md."""
    rows: dict[str, tuple[str, str]] = {}
    text = (ROOT / "docs" / "classification.md").read_text(encoding="utf-8")
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 6 and (m := re.fullmatch(r"`([a-z0-9-]+)`", cells[0])):
            rows[m.group(1)] = (cells[1], cells[4].strip("`"))
    return rows


def test_the_documented_table_is_the_table_in_the_code() -> None:
    rows = _doc_rows()
    assert set(rows) == {rule.id for rule in RULES}
    for rule in RULES:
        looks_at, cls = rows[rule.id]
        assert looks_at.startswith(rule.looks_at.value) or (
            rule.looks_at is Evidence.STATUS and looks_at.startswith("status")), rule.id
        if rule.id not in ("class-name", "challenge"):
            assert cls == rule.cls.value, rule.id
