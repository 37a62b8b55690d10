"""Where a credential configured with an ``issuer`` sends its requests.

Owns the token path's use of discovery: ``obtain_token`` is one token attempt
of the renewal loop (``exporter.renewal``) for any provider. With a
``token_url`` it is just ``exporter.tokens.request_token``. With an
``issuer`` it first takes the issuer's metadata from the exporter-wide cache
(``exporter.discovery.MetadataCache``; read when absent, a day old, after a
config reload, or after the token endpoint answered 404), then:

* refuses, without sending anything, an ``auth_method`` the document's
  ``token_endpoint_auth_methods_supported`` leaves out: class
  ``invalid_client``, which RFC 6749 §5.2 gives to "unsupported
  authentication method", logged at error (``--config.check`` cannot know
  it: it never reads the network);
* sends the token request to ``token_endpoint``, or with a mutual-TLS method
  to ``mtls_endpoint_aliases.token_endpoint`` where the server has one
  (RFC 8705 §5).

A failed metadata read is a failed token attempt (so the credential's first
attempt completes, its probes start and ``/-/ready`` turns 200) of the class
``DiscoveryError.token_error`` gives it, and is counted on the discovery
failure counter under its own class (``issuer_mismatch`` only there). The
whole attempt, metadata read included, is bounded by the provider's timeout.

``server_metadata`` is the same read for the introspection probe
(``exporter.introspection``), which finds its endpoint there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import httpx

from exporter.clientauth import ALL_METHODS, MTLS_METHODS
from exporter.discovery import DiscoveryError, MetadataCache, ServerMetadata
from exporter.errors import ErrorClass
from exporter.logsetup import log_for
from exporter.state import ProviderState
from exporter.tokens import Token, TokenError, request_token

log = logging.getLogger("exporter.endpoints")


async def server_metadata(
    client: httpx.AsyncClient, state: ProviderState, cache: MetadataCache, *,
    timeout: float | None = None,
) -> ServerMetadata:
    """The provider's issuer metadata, cached; the read's outcome is recorded on ``state``.

    Raises ``DiscoveryError``. A cached document counts as the success it
    was: ``discovery_last_success`` is when it was read.
    """
    provider = state.provider
    assert provider.issuer is not None
    logger = log_for(log, provider.name)
    try:
        metadata = await cache.get(
            client, provider.issuer, timeout=provider.timeout if timeout is None else timeout,
            max_bytes=provider.max_response_bytes, allow_http=provider.allow_insecure_http)
    except DiscoveryError as exc:
        error = str(exc.error)
        counts = state.discovery_failures
        state.discovery_failures = {**counts, error: counts.get(error, 0) + 1}
        changed = state.discovery_last_error != error
        state.discovery_last_error = error
        logger.log(logging.WARNING if changed else logging.DEBUG,
                   "reading the issuer's metadata failed (%s): %s", error, exc.detail)
        raise
    if state.discovery_last_error is not None:
        logger.info("the issuer's metadata was read again")
    state.discovery_last_error = None
    state.discovery_last_success = metadata.fetched_at
    return metadata


async def obtain_token(
    client: httpx.AsyncClient,
    state: ProviderState,
    clock: Callable[[], float],
    cache: MetadataCache,
) -> Token:
    """One token attempt, discovery included. Raises ``TokenError`` and nothing else."""
    provider = state.provider
    if provider.issuer is None:
        return await request_token(client, provider, clock)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        metadata = await server_metadata(client, state, cache)
    except DiscoveryError as exc:
        raise TokenError(exc.token_error, f"discovery failed ({exc.error}): {exc.detail}",
                         status=exc.status) from None
    method = provider.auth_method
    if not metadata.supports_auth_method(method):
        # Only names we know are repeated: the list comes from the server.
        listed = [m for m in ALL_METHODS if m in (
            metadata.token_endpoint_auth_methods_supported or ())]
        repeated = state.last_error is ErrorClass.INVALID_CLIENT and state.consecutive_failures
        log_for(log, provider.name).log(
            logging.DEBUG if repeated else logging.ERROR,
            "the issuer's token endpoint does not take auth_method %s (its metadata lists %s); "
            "no token request is sent until the config or the server changes",
            method, ", ".join(listed) or "none the exporter knows")
        raise TokenError(ErrorClass.INVALID_CLIENT, f"auth_method {method} is not in the "
                         "server's token_endpoint_auth_methods_supported")
    endpoint = metadata.endpoint("token_endpoint", mtls=method in MTLS_METHODS)
    assert endpoint is not None  # parse_metadata requires a token_endpoint
    remaining = provider.timeout - (loop.time() - started)
    if remaining <= 0:
        raise TokenError(ErrorClass.TIMEOUT, "reading the metadata used up the timeout")
    try:
        return await request_token(client, provider, clock, url=endpoint, timeout=remaining)
    except TokenError as exc:
        if exc.status == 404:
            # The server may have moved its endpoint since the document was read.
            cache.invalidate(provider.issuer)
            log_for(log, provider.name).info(
                "the token endpoint answered 404; the issuer's metadata is read again at "
                "the next attempt")
        raise
