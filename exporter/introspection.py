"""The introspection probe (``kind: introspection``): ask the server about the held token.

Owns one RFC 7662 request and the judging of its answer. The probe POSTs the
credential's current access token to the introspection endpoint (the
configured ``url``, else the one the issuer's metadata names, else for a
mutual-TLS credential its RFC 8705 alias), authenticated as the probe's own
client (``client_id`` with ``client_secret_basic`` or ``client_secret_post``,
typically a resource server's) or, when it has none, as the provider's own
credential with the provider's auth method. The answer:

=========================================  ======================  ==================
answer                                     class                   why
=========================================  ======================  ==================
``active: true``, nothing below            success
``active: false``                          ``token_revoked``       RFC 7662 §2.2: the
                                                                   server will not say
                                                                   why; a fresh token
                                                                   may fix it
``exp`` more than ``EXP_TOLERANCE``        ``invalid_response``    the token answer's
before the expiry the exporter holds                               lifetime is wrong:
                                                                   renewals would come
                                                                   after expiry
a scope granted (or, if the token answer   ``insufficient_scope``  the server's view of
named none, requested) missing from                                the token lacks it
``scope``
an HTTP error                              by ``errors.RULES`` as
                                           a token endpoint's
                                           (a 401 is the
                                           introspecting client's
                                           ``invalid_client``)
not a JSON object, no boolean ``active``   ``invalid_response``
=========================================  ======================  ==================

An ``exp`` later than the exporter's is no failure: the exporter renews early
anyway. Nothing from the answer reaches a log or label but through a class.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable

import httpx

from exporter.clientauth import MTLS_METHODS, ClientCredential, client_auth
from exporter.config import Probe
from exporter.discovery import DiscoveryError, MetadataCache
from exporter.endpoints import server_metadata
from exporter.errors import ErrorClass, InvalidResponse, classify_exception, classify_response
from exporter.http import json_object, read_capped
from exporter.logsetup import log_for
from exporter.state import ProviderState
from exporter.tokens import Token, assertion_audience

log = logging.getLogger("exporter.introspection")

#: How much earlier than the exporter believes the server may say the token
#: expires before that is a disagreement: clock skew between the two, and the
#: time between the server issuing the token and the exporter noting it.
EXP_TOLERANCE = 60.0


async def introspect(
    client: httpx.AsyncClient,
    state: ProviderState,
    probe: Probe,
    token: Token,
    discovery: MetadataCache,
    clock: Callable[[], float],
) -> tuple[int, ErrorClass | None]:
    """One introspection of ``token``: ``(HTTP status or 0, class or None for success)``.

    Never raises but for cancellation.
    """
    provider = state.provider
    logger = log_for(log, provider.name, probe.name)
    own = probe.credential
    credential = own or provider.credential
    mtls = own is None and provider.auth_method in MTLS_METHODS
    url, token_endpoint = probe.url, provider.token_url
    if provider.issuer is not None and (not url or not token_endpoint):
        try:
            metadata = await server_metadata(client, state, discovery, timeout=probe.timeout)
        except DiscoveryError as exc:
            return 0, exc.token_error
        token_endpoint = metadata.endpoint("token_endpoint") or ""
        url = url or metadata.endpoint("introspection_endpoint", mtls=mtls) or ""
        if not url:
            _log_once(state, probe, logger, ErrorClass.INVALID_RESPONSE,
                      "the issuer's metadata names no introspection_endpoint; set the "
                      "probe's url")
            return 0, ErrorClass.INVALID_RESPONSE
    status, error, why = await _ask(client, state, probe, token, credential, url,
                                    token_endpoint, clock)
    if error is not None and why:
        _log_once(state, probe, logger, error, why)
    return status, error


async def _ask(
    client: httpx.AsyncClient, state: ProviderState, probe: Probe, token: Token,
    credential: ClientCredential, url: str, token_endpoint: str, clock: Callable[[], float],
) -> tuple[int, ErrorClass | None, str]:
    provider = state.provider
    try:
        auth_form, headers = client_auth(
            credential, audience=assertion_audience(provider, token_endpoint or url), now=clock())
    except Exception as exc:  # a signing failure: ours, not the server's
        return 0, ErrorClass.OTHER, f"could not authenticate the request ({type(exc).__name__})"
    form = {"token": token.access_token.get_secret_value(), "token_type_hint": "access_token",
            **auth_form}
    try:
        async with asyncio.timeout(probe.timeout):
            async with client.stream(
                "POST", url, data=form,
                headers={**probe.headers, "Accept": "application/json", **headers},
                timeout=probe.timeout, follow_redirects=False,
            ) as response:
                body = await read_capped(response, provider.max_response_bytes)
    except InvalidResponse as exc:
        return exc.status or 0, ErrorClass.INVALID_RESPONSE, ""
    except Exception as exc:
        return 0, classify_exception(exc), ""
    status = response.status_code
    if not 200 <= status <= 299:
        # The endpoint judges the introspecting client, as a token endpoint does.
        return status, classify_response(status, response.headers, body, "token"), ""
    error, why = judge(body, token, state.provider.scope, clock())
    return status, error, why


def judge(body: bytes, token: Token, requested_scope: str | None,
          now: float) -> tuple[ErrorClass | None, str]:
    """The class of a 2xx introspection answer about ``token`` (None: success), and why."""
    try:
        doc = json_object(body, "the introspection answer")
    except InvalidResponse as exc:
        return ErrorClass.INVALID_RESPONSE, str(exc)
    if not isinstance(doc.get("active"), bool):
        return ErrorClass.INVALID_RESPONSE, "the introspection answer has no boolean active"
    if not doc["active"]:
        return ErrorClass.TOKEN_REVOKED, ""
    exp = doc.get("exp")
    if (isinstance(exp, int | float) and not isinstance(exp, bool) and math.isfinite(exp)
            and exp < token.expires_at - EXP_TOLERANCE):
        return ErrorClass.INVALID_RESPONSE, (
            f"the server says the token expires {token.expires_at - exp:.0f}s before the "
            "token answer's lifetime says; renewals planned by that lifetime come too late")
    expected = token.granted_scopes
    if expected is None and requested_scope:
        expected = frozenset(requested_scope.split())
    scope = doc.get("scope")
    if expected and isinstance(scope, str):
        missing = expected - frozenset(scope.split())
        if missing:
            return ErrorClass.INSUFFICIENT_SCOPE, (
                f"the server's view of the token lacks {len(missing)} of the "
                f"{len(expected)} scope(s) the token was granted")
    return None, ""


def _log_once(state: ProviderState, probe: Probe, logger: logging.LoggerAdapter[logging.Logger],
              error: ErrorClass, why: str) -> None:
    """Say why at warning when the class is new for this probe, at debug while it repeats."""
    probe_state = state.probes.get(probe.name)
    repeated = probe_state is not None and probe_state.last_error is error
    logger.log(logging.DEBUG if repeated else logging.WARNING, "%s: %s", error, why)
