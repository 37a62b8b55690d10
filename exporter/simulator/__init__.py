"""Simulated copies of the five seed providers, for tests and ``--demo``.

This package owns the provider simulator: one loopback HTTP server per
provider that issues OAuth 2.0 client-credentials tokens and answers API calls
the way that provider's documentation (the seed documents) describes, quirks
and error shapes included, plus fault switches that make it misbehave on
demand::

    kind             token path      client auth          lifetime  quirks
    simpledocs       /oauth/token    client_secret_post   7200 s    10 token requests/min/IP;
                                                                    one active token per app;
                                                                    errors {"type": ...}
    smartdocumentor  /connect/token  client_secret_post   3600 s    scope must be "WebAPI";
                                                                    client secrets expire
    simplifi         /oauth/token    client_secret_basic  3600 s    "__type", "refresh_token"
    simplestore      /connect/token  client_secret_post   3600 s    lifetime field "expiries_in"
    dokstamp         /oauth/token    client_secret_post   43200 s   JWT tokens; API needs
                                                                    X-Tenant and Accept: json

Where things live::

    vendors/<kind>.py   one vendor's facts, bodies, errors and API (a ``Vendor`` subclass)
    vendors/identityserver.py   what SmartDocumentor and SimpleStore share: an
                        IdentityServer token endpoint and an ASP.NET JwtBearer API
    vendors/oidc.py     an optional generic OpenID Connect server (kind "oidc", not a
                        seed vendor): discovery, JWT and mTLS client authentication,
                        introspection, revocation
    vendors/__init__.py the list of vendors; KINDS and TOKEN_PATHS come from it
    engine.py           clients, tokens, rate limits, request logs, client authentication
    faults.py           the fault switches and the values they accept
    server.py           SimulatedProvider (an engine on a port) and Simulation (all five)
    admin.py            the /_sim/ admin API (faults, revoke, stats)

It is test infrastructure: bind it to loopback only. It never logs requests,
secrets or tokens.
"""

from __future__ import annotations

from exporter.simulator.engine import ApiRequest, TokenRequest, TokenState
from exporter.simulator.faults import Faults
from exporter.simulator.server import SimulatedProvider, Simulation
from exporter.simulator.vendors import VENDORS, Vendor

KINDS: tuple[str, ...] = tuple(vendor.kind for vendor in VENDORS)

DEFAULT_LIFETIMES: dict[str, int] = {vendor.kind: vendor.lifetime for vendor in VENDORS}

TOKEN_PATHS: dict[str, str] = {vendor.kind: vendor.token_path for vendor in VENDORS}

DEMO_CLIENTS: dict[str, tuple[str, str]] = {vendor.kind: vendor.demo_client for vendor in VENDORS}

__all__ = [
    "DEFAULT_LIFETIMES",
    "DEMO_CLIENTS",
    "KINDS",
    "TOKEN_PATHS",
    "VENDORS",
    "ApiRequest",
    "Faults",
    "SimulatedProvider",
    "Simulation",
    "TokenRequest",
    "TokenState",
    "Vendor",
]
