"""The simulator's fault switches: what they are and which values they accept.

A provider holds one ``Faults`` value and replaces it whole on every change
(``SimulatedProvider.set_faults``), so a handler thread always sees a
consistent set. The admin API (``admin.py``) accepts the same names and
values as JSON.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class Faults:
    """Switches that make a provider misbehave; all off by default."""

    wrong_credentials: bool = False  # token endpoint refuses every client as invalid_client
    server_error: bool = False  # token endpoint answers 503 with an HTML body
    delay: float = 0.0  # seconds to wait before answering a token request
    non_json: bool = False  # token endpoint answers 200 with an HTML page
    rate_limited: bool = False  # token endpoint answers 429, Retry-After: 1
    lifetime: int | None = None  # lifetime (s) of newly issued tokens
    api_server_error: bool = False  # API endpoints answer 500 with an HTML page
    api_delay: float = 0.0  # seconds to wait before answering an API request
    #: API endpoints refuse every bearer token with a bare 401 (no body, no
    #: WWW-Authenticate): a gateway misconfiguration, API access withdrawn.
    api_refuses_tokens: bool = False
    # Vendors with OpenID Connect discovery and JWT client authentication (oidc):
    wrong_issuer: bool = False  # the discovery document names another issuer
    discovery_status: int | None = None  # discovery answers this 4xx/5xx status instead
    replayed_jti: bool = False  # every client assertion is refused as a replayed jti


_BOOL_FAULTS = frozenset(
    {"wrong_credentials", "server_error", "non_json", "rate_limited", "api_server_error",
     "api_refuses_tokens",
     "wrong_issuer", "replayed_jti"}
)
_SECONDS_FAULTS = frozenset({"delay", "api_delay"})


def checked_fault(name: str, value: object) -> object:
    """The value to store for fault ``name``; ValueError if it cannot be one."""
    if name in _BOOL_FAULTS:
        if not isinstance(value, bool):
            raise ValueError(f"fault {name!r} must be true or false")
        return value
    if name in _SECONDS_FAULTS:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < 0
        ):
            raise ValueError(f"fault {name!r} must be a non-negative number of seconds")
        return float(value)
    if name == "lifetime":
        # Zero and negative lifetimes are allowed: they test a client's handling
        # of an unusable lifetime.
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError("fault 'lifetime' must be a whole number of seconds or null")
        return value
    if name == "discovery_status":
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or not 400 <= value <= 599
        ):
            raise ValueError("fault 'discovery_status' must be an HTTP error status or null")
        return value
    raise ValueError(f"unknown fault {name!r}")
