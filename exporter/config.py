"""The provider file: YAML in, validated and resolved provider settings out.

Loading goes in these steps, each of which can fail with a ``ConfigError``
whose every line reads ``file:line:column: provider "x": field "a.b": message``
and never holds a secret (see ``exporter.yamlfile`` for reading and locating):

1. read and parse the YAML, keeping the position of every key and value
   (duplicate keys are errors);
2. expand ``${VAR}``, ``${VAR:-default}``, ``${VAR:?message}`` in every value
   (``exporter.interpolation``), remembering which values came from the
   environment; a bare ``$VAR`` is kept and warned about;
3. merge ``defaults`` into each provider and validate with pydantic
   (unknown keys rejected, secrets held as ``SecretStr``, contradictions
   between fields reported at the field concerned);
4. read secret, key and certificate files (a signing key that cannot make
   its algorithm's signatures, a client key that is not its certificate's,
   an encrypted key: errors at the key that names the file), warn about what
   is odd but workable (a secret past its ``client_secret_expires_at``, the
   old ``tls`` key), and apply the preset: default token URL, auth method,
   scope, lifetime, rate limit and the headers the provider's API needs.

Nothing here reads the network: an ``issuer``'s metadata is read in the token
job (``exporter.endpoints``), so ``--config.check`` never discovers.

What may be printed: an error echoes the offending value only when it was
written literally in the file in a field that holds no credential, truncated.
A value that came from the environment, a secret file or a secret field is
never echoed; ``Config.secrets()`` hands all of them (and URL userinfo) to the
log redactor, and ``summary`` masks them too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import logging
import os
import re
import ssl
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)

from exporter.assertion import (
    PRIVATE_KEY_ALGORITHMS,
    KeyFileError,
    SigningKey,
    certificate_not_after,
    load_private_key,
    secret_key,
)
from exporter.clientauth import JWT_METHODS, MTLS_METHODS, SECRET_METHODS, ClientCredential
from exporter.interpolation import InterpolationError, expand
from exporter.logsetup import Redactor, mask_userinfo
from exporter.presets import PRESETS, AuthMethod, Preset, RateLimit
from exporter.yamlfile import (
    CheckedModel,
    ConfigError,
    Loc,
    LocatedYaml,
    Problem,
    Problems,
    StrictModel,
    check_mapping,
    compose_yaml,
    named_items,
    read_config_text,
    validation_problems,
)

__all__ = ["Config", "ConfigError", "Probe", "Provider", "load_config", "parse_config",
           "summary"]

log = logging.getLogger("exporter.config")

# --------------------------------------------------------------------------- durations

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

# Validator messages never include the value: the loader appends it where it
# is safe to show (see _Shower), so one rule decides for every field.


def parse_duration(value: object) -> float:
    """Parse ``"500ms"``, ``"30s"``, ``"5m"``, ``"1h30m"`` or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m or a number of seconds")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            pos, seconds = 0, 0.0
            for match in _DURATION_PART.finditer(text):
                if match.start() != pos:
                    break
                seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
                pos = match.end()
            if pos != len(text) or not text:
                raise ValueError(
                    "invalid duration: use e.g. 500ms, 30s, 5m, 1h or seconds"
                ) from None
    else:
        raise ValueError("expected a duration such as 30s, 5m or a number of seconds")
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        raise ValueError("duration must be finite")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


PositiveDuration = Annotated[Duration, Field(gt=0)]


def parse_rate_limit(value: object) -> RateLimit | None:
    """Parse ``"10/1m"`` (10 requests per minute); ``none`` disables the limit."""
    if value is None or isinstance(value, RateLimit):
        return value
    if not isinstance(value, str):
        raise ValueError("expected REQUESTS/PERIOD such as 10/1m, or none")
    if value.strip().lower() in ("none", "off", "unlimited"):
        return None
    count, sep, period = value.partition("/")
    if not sep or not count.strip().isdigit() or int(count) < 1:
        raise ValueError("invalid rate limit: use REQUESTS/PERIOD such as 10/1m")
    seconds = parse_duration(period)
    if seconds <= 0:
        raise ValueError("rate limit period must be greater than zero")
    return RateLimit(int(count), seconds)


# --------------------------------------------------------------------------- URLs

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


def is_loopback_host(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


_HOSTNAME = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9._\-]*[A-Za-z0-9_])?$")


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return bool(_HOSTNAME.match(host))
    return True


def _check_url(value: str) -> str:
    if any(c.isspace() for c in value):
        raise ValueError("invalid URL: contains whitespace")
    try:
        url = httpx.URL(value)
    except (httpx.InvalidURL, TypeError) as exc:
        # httpx quotes parts of the URL after the colon; keep only its reason.
        raise ValueError(f"invalid URL: {str(exc).split(':')[0].lower()}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("must be an absolute http:// or https:// URL")
    if not _valid_host(url.host):
        raise ValueError("invalid URL: bad host name")
    return value


HttpUrl = Annotated[str, BeforeValidator(lambda v: _check_url(v) if isinstance(v, str) else v)]


def _plain_http_remote(url: str) -> bool:
    parsed = httpx.URL(url)
    return parsed.scheme == "http" and not is_loopback_host(parsed.host)


def url_credentials(url: str) -> list[str]:
    """The userinfo of a URL, whole and its password part, for redaction."""
    authority = url.partition("://")[2].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    if "@" not in authority:
        return []
    userinfo = authority.rsplit("@", 1)[0]
    found = [userinfo]
    if ":" in userinfo:
        found.append(userinfo.split(":", 1)[1])
    return found


# --------------------------------------------------------------------------- models

_NAME = r"^[A-Za-z0-9_-]+$"

#: Fields that hold a credential: their values are never echoed in an error.
SECRET_FIELDS = frozenset({"client_secret"})
#: Mappings whose values may hold a credential (an API key header, say).
SECRET_MAPPINGS = frozenset({"headers", "token_params"})
#: Header and parameter names whose values are redacted from logs even when
#: written literally.
_CREDENTIAL_NAME = re.compile(r"authorization|cookie|secret|token|key|password|passwd",
                              re.IGNORECASE)
#: Fields published by design (labels, the landing page): a value from the
#: environment here is not redacted from logs.
PUBLIC_FIELDS = frozenset({"name", "preset", "method", "auth", "auth_method", "scope"})


class Tunables(CheckedModel):
    """Keys that may be set in ``defaults`` and overridden per provider."""

    probe_interval: PositiveDuration = 60.0
    timeout: PositiveDuration = 10.0
    renew_at_fraction: float = Field(0.67, gt=0.0, lt=1.0)
    #: Renewal happens up to this fraction of the lifetime early, at random,
    #: so that credentials configured together do not renew together.
    renew_jitter: float = Field(0.05, ge=0.0, lt=0.5)
    backoff_initial: PositiveDuration = 1.0
    backoff_max: PositiveDuration = 300.0
    max_response_bytes: int = Field(1 << 20, ge=1024)

    def field_problems(self) -> Problems:
        out = super().field_problems()
        if self.backoff_initial > self.backoff_max:
            out.append((("backoff_initial",), "must not exceed backoff_max"))
        if self.renew_jitter >= self.renew_at_fraction:
            out.append((("renew_jitter",), "must be less than renew_at_fraction, or a "
                        "renewal could fall due as soon as a token arrives"))
        out.extend(self.timing_problems())
        return out

    def timing_problems(self) -> Problems:
        if self.timeout >= self.probe_interval:
            return [(("timeout",), "must be less than probe_interval, or a slow probe would "
                     "still be running when the next one is due")]
        return []


def _unique_header_names(value: dict[str, str]) -> dict[str, str]:
    seen = Counter(name.lower() for name in value)
    twice = sorted(name for name in value if seen[name.lower()] > 1)
    if twice:
        raise ValueError(f"header {twice[0]} is given more than once (header names are "
                         "case-insensitive)")
    return value


Headers = Annotated[dict[str, str], Field(default_factory=dict)]


ProbeKind = Literal["http", "introspection"]
#: How an introspection probe's own client authenticates (RFC 7662 §2.1 leaves
#: it to the server; these two are what servers take for a resource server).
IntrospectionAuth = Literal["client_secret_basic", "client_secret_post"]
#: Probe keys that only an HTTP probe uses: an introspection request is a POST
#: of the token, judged by its answer's ``active``.
_HTTP_ONLY = ("method", "expect_status", "body", "auth")
#: Probe keys that only an introspection probe uses: its own credential.
_INTROSPECTION_ONLY = ("client_id", "client_secret", "client_secret_file", "auth_method")


class ProbeConfig(CheckedModel):
    name: str = Field(pattern=_NAME)
    #: http: request ``url`` with the token; introspection: ask the server
    #: about the token (RFC 7662).
    kind: ProbeKind = "http"
    #: Required for kind http; an introspection probe defaults to the
    #: ``introspection_endpoint`` its provider's issuer publishes.
    url: HttpUrl | None = None
    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] = "GET"
    expect_status: list[Annotated[int, Field(ge=100, le=599)]] = Field(
        default_factory=lambda: [200], min_length=1
    )
    interval: PositiveDuration | None = None
    timeout: PositiveDuration | None = None
    headers: Headers
    body: str | None = None
    auth: Literal["bearer", "none"] = "bearer"
    #: kind introspection: the introspecting client, when it is not the
    #: provider's own credential (a resource server's, typically).
    client_id: str | None = Field(None, min_length=1)
    client_secret: SecretStr | None = None
    client_secret_file: Path | None = None
    auth_method: IntrospectionAuth | None = None

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        return _unique_header_names(value)

    def field_problems(self) -> Problems:
        """Keys that do not fit the probe's kind, and the introspecting credential's gaps."""
        out = super().field_problems()
        given = self.model_fields_set
        if self.kind == "http":
            if self.url is None:
                out.append((("url",), "required: the URL to probe"))
            out.extend(((key,), "is for kind: introspection only (the introspecting client's "
                        "own credential)") for key in _INTROSPECTION_ONLY if key in given)
            return out
        out.extend(((key,), "is not used by kind: introspection (it POSTs the token and "
                    "judges the answer's active, exp and scope)")
                   for key in _HTTP_ONLY if key in given)
        if self.client_secret is not None and self.client_secret_file is not None:
            out.append((("client_secret_file",), "client_secret is set too: keep one of the two"))
        if self.client_id is None:
            out.extend(((key,), "needs the probe's own client_id (without one, the probe "
                        "introspects with the provider's credential)")
                       for key in ("client_secret", "client_secret_file", "auth_method")
                       if key in given)
        elif self.client_secret is None and self.client_secret_file is None:
            out.append((("client_secret",), "required with the probe's own client_id: set "
                        "client_secret or client_secret_file"))
        return out


class TLSConfig(CheckedModel):
    """Outbound TLS for the token endpoint and the probes of one provider (``tls_config``).

    ``cert_file``/``key_file`` are the client certificate: presented on every
    connection, and the credential itself for the mutual-TLS auth methods.
    """

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure_skip_verify: bool = False

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _readable(cls, path: Path | None) -> Path | None:
        if path is not None and not os.access(path, os.R_OK):
            raise ValueError("is not a readable file")
        return path

    def field_problems(self) -> Problems:
        out = super().field_problems()
        if (self.cert_file is None) != (self.key_file is None):
            missing = "key_file" if self.key_file is None else "cert_file"
            out.append(((missing,), "cert_file and key_file must be set together"))
        return out


def check_issuer(value: str) -> str:
    """``value`` if it can be an issuer identifier (RFC 8414 section 2), else ValueError."""
    _check_url(value)
    if "?" in value or "#" in value:
        raise ValueError("an issuer has no query or fragment (RFC 8414 section 2)")
    return value


IssuerUrl = Annotated[str, BeforeValidator(lambda v: check_issuer(v) if isinstance(v, str) else v)]
SigningAlgorithm = Literal["RS256", "PS256", "ES256", "EdDSA", "Ed25519", "HS256"]
#: Where a client assertion's ``aud`` points: the token endpoint the request
#: goes to, the issuer, or a URL written out.
_AUDIENCE_CHOICES = ("token_endpoint", "issuer")


def _check_audience(value: object) -> object:
    if isinstance(value, str) and value not in _AUDIENCE_CHOICES:
        try:
            _check_url(value)
        except ValueError:
            raise ValueError("must be token_endpoint, issuer, or an absolute https:// URL "
                             "the server expects as aud") from None
    return value


class ProviderConfig(Tunables):
    name: str = Field(pattern=_NAME)
    preset: Literal[
        "simpledocs", "smartdocumentor", "simplifi", "simplestore", "dokstamp", "generic"
    ] = "generic"
    token_url: HttpUrl | None = None
    #: Instead of token_url: the endpoints come from the issuer's metadata
    #: (OpenID Connect discovery, then RFC 8414), read in the token job.
    issuer: IssuerUrl | None = None
    client_id: str = Field(min_length=1)
    client_secret: SecretStr | None = None
    client_secret_file: Path | None = None
    auth_method: AuthMethod | None = None
    #: private_key_jwt: the signing key, a PEM or JWK file.
    private_key_file: Path | None = None
    #: The assertion's ``kid``; default: the JWK's kid or the RFC 7638 thumbprint.
    private_key_id: str | None = Field(None, min_length=1)
    signing_algorithm: SigningAlgorithm | None = None
    #: private_key_jwt: the certificate of the signing key (``x5t#S256``/``x5t``).
    signing_certificate_file: Path | None = None
    assertion_audience: Annotated[str, BeforeValidator(_check_audience)] | None = None
    scope: str | None = None
    token_params: dict[str, str] = Field(default_factory=dict)
    headers: Headers
    client_secret_expires_at: datetime | None = None
    token_rate_limit: Annotated[RateLimit | None, BeforeValidator(parse_rate_limit)] = None
    #: Lifetime to assume when the server states none (default: the preset's).
    token_lifetime: PositiveDuration | None = None
    allow_insecure_http: bool = False
    tls_config: TLSConfig | None = None
    #: The old name of tls_config, still read (with a warning).
    tls: TLSConfig | None = None
    proxy_url: HttpUrl | None = None
    #: Revoke the held token at shutdown (RFC 7009), so no token outlives us.
    revoke_on_shutdown: bool = False
    revocation_url: HttpUrl | None = None
    probes: list[ProbeConfig] = Field(default_factory=list)

    @field_validator("token_params")
    @classmethod
    def _no_reserved_params(cls, value: dict[str, str]) -> dict[str, str]:
        reserved = {"grant_type", "client_id", "client_secret", "scope", "client_assertion",
                    "client_assertion_type"} & value.keys()
        if reserved:
            raise ValueError(
                f"{', '.join(sorted(reserved))} cannot be set in token_params; "
                "use the provider keys instead"
            )
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        return _unique_header_names(value)

    @field_validator("client_secret_expires_at", mode="before")
    @classmethod
    def _date_is_midnight(cls, value: object) -> object:
        # YAML reads 2027-03-01 as a date: the secret expires at its start, UTC.
        if isinstance(value, date) and not isinstance(value, datetime):
            return datetime(value.year, value.month, value.day, tzinfo=UTC)
        return value

    @field_validator("client_secret_expires_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    def field_problems(self) -> Problems:
        out = super().field_problems()
        preset = PRESETS[self.preset]
        method = self.auth_method or preset.auth_method
        out.extend(self._credential_problems(method))
        out.extend(self._endpoint_problems())
        if preset.required_scope is not None and self.scope not in (None, preset.required_scope):
            out.append((("scope",), f"must be {preset.required_scope!r} for preset "
                        f"{self.preset} (the provider rejects any other)"))
        insecure = "use https or set allow_insecure_http: true"
        token_url = self.token_url or (preset.token_url if self.issuer is None else None)
        if token_url and _plain_http_remote(token_url) and not self.allow_insecure_http:
            out.append((("token_url",), "plain http outside loopback would send the client "
                        f"secret in clear; {insecure}"))
        if self.issuer and _plain_http_remote(self.issuer) and not self.allow_insecure_http:
            out.append((("issuer",), "plain http outside loopback would let anyone on the path "
                        f"choose where the credential is sent; {insecure}"))
        if (self.revocation_url and _plain_http_remote(self.revocation_url)
                and not self.allow_insecure_http):
            out.append((("revocation_url",), "plain http outside loopback would send the "
                        f"client secret in clear; {insecure}"))
        if self.revoke_on_shutdown and not (self.revocation_url or (
                preset.revocation_path and token_url)):
            out.append((("revoke_on_shutdown",), "needs a revocation_url (preset "
                        f"{self.preset} has none)" if self.issuer is None else
                        "needs a revocation_url (the issuer's is not looked up at shutdown)"))
        first_use: dict[str, int] = {}
        for i, probe in enumerate(self.probes):
            if probe.name in first_use:
                out.append((("probes", i, "name"), "duplicate probe name (probe "
                            f"#{first_use[probe.name] + 1} has it too)"))
            first_use.setdefault(probe.name, i)
            if probe.kind == "introspection" and probe.url is None and self.issuer is None:
                out.append((("probes", i, "url"), "required: an introspection probe finds its "
                            "endpoint from the provider's issuer, and this provider sets none"))
            sends_token = probe.auth == "bearer" or probe.kind == "introspection"
            if (probe.url and sends_token and _plain_http_remote(probe.url)
                    and not self.allow_insecure_http):
                out.append((("probes", i, "url"), "plain http outside loopback would send "
                            "the access token in clear; use https, set auth: none, or set "
                            "allow_insecure_http: true on the provider"))
        return out

    def _endpoint_problems(self) -> Problems:
        out: Problems = []
        if self.token_url is not None and self.issuer is not None:
            out.append((("issuer",), "token_url is set too: keep one of the two (the issuer's "
                        "metadata names the token endpoint)"))
        elif self.token_url is None and self.issuer is None and PRESETS[self.preset].token_url \
                is None:
            out.append((("token_url",), f"required: preset {self.preset} has no default token "
                        "URL; set token_url, or issuer to find it by discovery"))
        return out

    def _credential_problems(self, method: str) -> Problems:
        """What the auth method needs, and keys it would ignore (a mistake, most likely)."""
        out: Problems = []
        given = self.model_fields_set
        secret_keys = [k for k in ("client_secret", "client_secret_file")
                       if getattr(self, k) is not None]
        if len(secret_keys) == 2:
            out.append((("client_secret_file",),
                        "client_secret is set too: keep one of the two"))
        elif method in SECRET_METHODS and not secret_keys:
            out.append((("client_secret",),
                        "required: set client_secret or client_secret_file"))
        elif method not in SECRET_METHODS:
            out.extend(((k,), f"is not used with auth_method {method}: remove it")
                       for k in secret_keys)
        if method == "private_key_jwt" and self.private_key_file is None:
            out.append((("private_key_file",), "required with auth_method private_key_jwt: "
                        "the signing key, a PEM or JWK file"))
        if method != "private_key_jwt":
            out.extend(((k,), "is for auth_method private_key_jwt only")
                       for k in ("private_key_file", "signing_certificate_file") if k in given)
        if method not in JWT_METHODS:
            out.extend(((k,), "is for auth_method private_key_jwt or client_secret_jwt only")
                       for k in ("private_key_id", "signing_algorithm", "assertion_audience")
                       if k in given)
        alg = self.signing_algorithm
        if method == "client_secret_jwt" and alg not in (None, "HS256"):
            out.append((("signing_algorithm",), "must be HS256 with client_secret_jwt (the "
                        "secret is the key)"))
        if method == "private_key_jwt" and alg == "HS256":
            out.append((("signing_algorithm",), "HS256 is for client_secret_jwt; with a private "
                        f"key use one of {', '.join(PRIVATE_KEY_ALGORITHMS)}"))
        if self.assertion_audience == "issuer" and self.issuer is None:
            out.append((("assertion_audience",), "is issuer, but this provider sets no issuer"))
        if self.tls is not None and self.tls_config is not None:
            out.append((("tls",), "tls_config is set too: tls is its old name, keep tls_config"))
        tls = self.tls_config or self.tls
        if method in MTLS_METHODS and (tls is None or tls.cert_file is None):
            where: Loc = ("tls_config", "cert_file") if self.tls_config else ("tls_config",)
            out.append((where, f"required with auth_method {method}: the client certificate "
                        "(cert_file and key_file) is the credential"))
        return out

    def timing_problems(self) -> Problems:
        """Each probe's own timeout against its own interval."""
        out: Problems = []
        why = "or a slow probe would still be running when the next one is due"
        for i, probe in enumerate(self.probes):
            interval = probe.interval or self.probe_interval
            timeout = probe.timeout or self.timeout
            if timeout < interval:
                continue
            problem: tuple[Loc, str]
            if probe.timeout is not None:
                problem = (("probes", i, "timeout"), f"must be less than the probe's interval, "
                           f"{why}")
            elif probe.interval is not None:
                problem = (("probes", i, "interval"), f"must be greater than timeout, {why}")
            else:
                problem = (("timeout",), f"must be less than probe_interval, {why}")
            if problem not in out:
                out.append(problem)
        return out


class FileConfig(StrictModel):
    defaults: Tunables = Field(default_factory=lambda: Tunables())
    providers: list[ProviderConfig] = Field(default_factory=list)


# --------------------------------------------------------------------------- resolved


@dataclass(frozen=True)
class Probe:
    name: str
    #: For an introspection probe, "" until discovery names the endpoint.
    url: str
    method: str
    expect_status: frozenset[int]
    interval: float
    timeout: float
    headers: Mapping[str, str]
    body: str | None
    auth: Literal["bearer", "none"]
    kind: ProbeKind = "http"
    #: An introspection probe's own client; None: the provider's credential.
    credential: ClientCredential | None = None


@dataclass(frozen=True)
class Outbound:
    """How to reach a provider: TLS trust and identity, proxy. Shared clients are keyed by it."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure_skip_verify: bool = False
    proxy_url: str | None = None
    #: Digest of the client certificate and key as loaded: a certificate
    #: renewed in place is a new option set, so it gets a client of its own.
    identity: str | None = None


@dataclass(frozen=True)
class Provider:
    """One credential at one token endpoint, with every default applied."""

    name: str
    preset: Preset
    #: "" when the token endpoint comes from the ``issuer``'s metadata.
    token_url: str
    client_id: str
    #: None for the methods that need none (private_key_jwt, the mutual-TLS ones).
    client_secret: SecretStr | None
    auth_method: AuthMethod
    scope: str | None
    token_params: Mapping[str, str]
    headers: Mapping[str, str]
    client_secret_expires_at: float | None
    token_rate_limit: RateLimit | None
    default_lifetime: float | None
    timeout: float
    renew_at_fraction: float
    renew_jitter: float
    backoff_initial: float
    backoff_max: float
    max_response_bytes: int
    probes: tuple[Probe, ...]
    outbound: Outbound = Outbound()
    revoke_on_shutdown: bool = False
    revocation_url: str | None = None
    #: Discovery instead of a token_url (OpenID Connect discovery, then RFC 8414).
    issuer: str | None = None
    #: The assertion key of client_secret_jwt and private_key_jwt.
    signing_key: SigningKey | None = None
    #: An assertion's ``aud``: "token_endpoint", "issuer", or a literal URL.
    assertion_audience: str = "token_endpoint"
    #: ``(use, notAfter)`` of the client certificate ("tls") and of the signing
    #: key's certificate ("signing"), read when the config was loaded: the
    #: certificates in use until the next reload.
    certificates: tuple[tuple[str, float], ...] = ()
    #: Plain-http endpoints outside loopback are accepted (from discovery too).
    allow_insecure_http: bool = False

    @property
    def token_host(self) -> str:
        """The rate-limit key: scheme-less host[:port] of the token endpoint, no userinfo.

        With an ``issuer``, the issuer's host: known before discovery, and where
        the token endpoint almost always is.
        """
        url = httpx.URL(self.token_url or self.issuer or "")
        return f"{url.host}:{url.port}" if url.port else url.host

    @property
    def credential(self) -> ClientCredential:
        """How requests of this provider authenticate the client."""
        return ClientCredential(self.client_id, self.auth_method, self.client_secret,
                                self.signing_key)

    @property
    def credential_key(self) -> tuple[object, ...]:
        """What identifies the token this provider holds: same key, same token.

        Where the token comes from (token URL or issuer), who asks (client id,
        auth method, secret, signing key), and what for (scope, parameters).
        Certificate files and timings are not in it: a reload that renews a
        certificate or changes an interval keeps the token.
        """
        return (
            self.token_url,
            self.issuer,
            self.client_id,
            self.auth_method,
            self.client_secret.get_secret_value() if self.client_secret else None,
            self.signing_key.fingerprint if self.signing_key else None,
            self.scope,
            tuple(sorted(self.token_params.items())),
        )


@dataclass(frozen=True)
class Config:
    path: str
    providers: tuple[Provider, ...]
    #: Besides the client secrets, values no output may show: free-text values
    #: read from the environment, URL userinfo, credential-like header values.
    sensitive: tuple[str, ...] = ()

    def secrets(self) -> list[str]:
        """Every value the log redactor must replace, longest first."""
        values = {p.client_secret.get_secret_value() for p in self.providers if p.client_secret}
        values.update(q.credential.secret.get_secret_value() for p in self.providers
                      for q in p.probes if q.credential and q.credential.secret)
        values.update(self.sensitive)
        return sorted((v for v in values if v), key=lambda v: (-len(v), v))


# --------------------------------------------------------------------------- loading

_SHOW_LIMIT = 40


@dataclass
class _Environment:
    """What interpolation did: which locations it touched and what it read."""

    #: Location -> the variables its value was built from.
    tainted: dict[Loc, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    #: (location, value read from the environment).
    values: list[tuple[Loc, str]] = dataclasses.field(default_factory=list)
    problems: list[Problem] = dataclasses.field(default_factory=list)
    bare: list[Loc] = dataclasses.field(default_factory=list)


def _interpolate(value: Any, at: Loc, env: Mapping[str, str], out: _Environment) -> Any:
    if isinstance(value, str):
        if "$" not in value:
            return value
        try:
            expansion = expand(value, env)
        except InterpolationError as exc:
            out.problems.append(Problem(at, str(exc)))
            return value
        if expansion.variables:
            out.tainted[at] = tuple(dict.fromkeys(expansion.variables))
        out.values.extend((at, v) for v in expansion.env_values)
        if expansion.bare:
            out.bare.append(at)
        return expansion.value
    if isinstance(value, dict):
        return {k: _interpolate(v, (*at, str(k)), env, out) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, (*at, i), env, out) for i, v in enumerate(value)]
    return value


def _source(doc: LocatedYaml, loc: Loc) -> Loc:
    """Where a provider's value was written: in the provider, or inherited from defaults."""
    if (len(loc) >= 3 and loc[0] == "providers" and not doc.written(loc[:3])
            and doc.written(("defaults", loc[2]))):
        return ("defaults", *loc[2:])
    return loc


def _is_secret_loc(loc: Loc) -> bool:
    names = [p for p in loc if isinstance(p, str)]
    return bool(SECRET_FIELDS.intersection(names)) or any(
        name in SECRET_MAPPINGS and i + 1 < len(loc) for i, name in enumerate(loc)
    )


class _Shower:
    """Decides what an error may echo of the value it is about."""

    def __init__(self, doc: LocatedYaml, env: _Environment) -> None:
        self.doc = doc
        self.env = env

    def __call__(self, loc: Loc, value: Any) -> str | None:
        names = self.env.tainted.get(_source(self.doc, loc))
        if names:
            return f" (from {', '.join('${' + n + '}' for n in names)}; value not shown)"
        if _is_secret_loc(loc):
            return None
        if isinstance(value, str):
            text = repr(mask_userinfo(value))
        elif isinstance(value, bool | int | float | date):
            text = str(value)
        else:
            return None
        if len(text) > _SHOW_LIMIT:
            text = text[: _SHOW_LIMIT - 3] + "..."
        return f" (got {text})"


def _default_text(name: str) -> str | None:
    """The built-in default of a tunable, as a user would write it."""
    field = Tunables.model_fields.get(name)
    if field is None:
        return None
    if any(getattr(m, "func", None) is parse_duration for m in field.metadata):
        return f"{field.default:g}s"
    return str(field.default)


def _inherited(doc: LocatedYaml, problem: Problem) -> Problem:
    """Point a provider's problem at where its value was set: in defaults, or nowhere."""
    loc = problem.loc
    source = _source(doc, loc)
    if source != loc:
        return dataclasses.replace(problem, at=source, note="set in defaults")
    if len(loc) == 3 and loc[0] == "providers" and not doc.written(loc):
        default = _default_text(str(loc[2]))
        if default is not None:
            return dataclasses.replace(problem, note=f"not set: the default is {default}")
    return problem


def _defaults_problems(doc: LocatedYaml, exc: ValidationError, show: _Shower) -> list[Problem]:
    out = []
    for problem in validation_problems(exc, ("defaults",), show=show, model=Tunables):
        key = problem.loc[-1] if len(problem.loc) == 2 else None
        if problem.key and isinstance(key, str) and key in ProviderConfig.model_fields:
            problem = dataclasses.replace(problem, message="can be set per provider only, "
                                          "not in defaults")
        out.append(problem)
    return out


def _duplicate_names(doc: LocatedYaml, providers: list[Any]) -> list[Problem]:
    first: dict[str, int] = {}
    out = []
    for i, item in enumerate(providers):
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str):
            continue
        if name in first:
            line = doc.position(("providers", first[name], "name"))
            out.append(Problem(("providers", i, "name"), "duplicate provider name (first "
                               f"used at line {line.line if line else '?'})"))
        else:
            first[name] = i
    return out


def _value_at(root: Any, loc: Loc) -> Any:
    current = root
    for part in loc:
        if isinstance(current, BaseModel) and isinstance(part, str):
            current = getattr(current, part, None)
        elif isinstance(current, list | tuple) and isinstance(part, int) and part < len(current):
            current = current[part]
        elif isinstance(current, Mapping):
            current = current.get(part)
        else:
            return None
    return current


def _sensitive(file_cfg: FileConfig, env: _Environment) -> set[str]:
    """Values that no output may show, beyond the client secrets."""
    out: set[str] = set()
    for loc, value in env.values:
        field = next((p for p in reversed(loc) if isinstance(p, str)), "")
        held = _value_at(file_cfg, loc)
        # A value that validated as a number, duration, flag or date is no secret,
        # and redacting "true" or "30" from every log line would garble the logs.
        if field not in PUBLIC_FIELDS and not isinstance(held, bool | int | float | datetime):
            out.add(value)
    for p in file_cfg.providers:
        for url in (p.token_url, p.issuer, p.revocation_url, p.proxy_url,
                    *(q.url for q in p.probes)):
            if url:
                out.update(url_credentials(url))
        for mapping in (p.headers, p.token_params, *(q.headers for q in p.probes)):
            out.update(v for k, v in mapping.items() if _CREDENTIAL_NAME.search(k))
    return out


#: A client secret is tens of bytes; a larger file is a wrong path (/dev/zero...).
_MAX_SECRET_BYTES = 64 << 10


def _read_secret_file(path: Path) -> str:
    try:
        with path.open("rb") as f:
            data = f.read(_MAX_SECRET_BYTES + 1)
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = (exc.strerror if isinstance(exc, OSError) and exc.strerror
                  else "not UTF-8 text" if isinstance(exc, UnicodeDecodeError)
                  else type(exc).__name__)
        raise ValueError(f"cannot read the secret file: {reason}") from None
    if len(data) > _MAX_SECRET_BYTES:
        raise ValueError("the secret file is larger than 64 KiB: is this the right file?")
    secret = text.strip("\r\n")
    if not secret:
        raise ValueError("the secret file is empty")
    return secret


def _merge_headers(*layers: Mapping[str, str]) -> dict[str, str]:
    """Later layers win; header names compare case-insensitively."""
    merged: dict[str, tuple[str, str]] = {}
    for layer in layers:
        for name, value in layer.items():
            merged[name.lower()] = (name, value)
    return dict(merged.values())


@dataclass
class _Loaded:
    """What a provider's files held: secrets, keys, certificates."""

    secret: str | None = None
    signing_key: SigningKey | None = None
    certificates: tuple[tuple[str, float], ...] = ()
    #: Digest of the client certificate and key files, so that a renewed
    #: certificate at the same path gets an HTTP client of its own.
    tls_identity: str | None = None
    probe_credentials: list[ClientCredential | None] = dataclasses.field(default_factory=list)


def _read_secret(value: SecretStr | None, file: Path | None, at: Loc, show: _Shower,
                 problems: list[Problem]) -> str | None:
    """The secret written, or read from its file; None (and a problem) if unusable."""
    if value is None and file is None:
        return None
    try:
        if value is not None:
            secret = value.get_secret_value()
            if not secret:
                raise ValueError("is empty")
        else:
            assert file is not None
            secret = _read_secret_file(file)
    except ValueError as exc:
        field = "client_secret" if value is not None else "client_secret_file"
        loc = (*at, field)
        shown = show(loc, str(file)) if value is None else None
        problems.append(Problem(loc, f"{exc}{shown or ''}"))
        return None
    return secret


def _key_problem(exc: KeyFileError, cfg: ProviderConfig, at: Loc, show: _Shower) -> Problem:
    field = exc.field
    if field == "client_secret" and cfg.client_secret is None:
        field = "client_secret_file"
    value = getattr(cfg, field, None)
    shown = show((*at, field), str(value)) if isinstance(value, Path | str) else None
    return Problem((*at, field), f"{exc.reason}{shown or ''}")


def _signing_key(cfg: ProviderConfig, secret: str | None, at: Loc, show: _Shower,
                 problems: list[Problem]) -> SigningKey | None:
    method = cfg.auth_method or PRESETS[cfg.preset].auth_method
    try:
        if method == "private_key_jwt":
            assert cfg.private_key_file is not None
            return load_private_key(cfg.private_key_file, cfg.signing_algorithm,
                                    cfg.private_key_id, cfg.signing_certificate_file)
        if method == "client_secret_jwt" and secret is not None:
            return secret_key(secret, cfg.signing_algorithm or "HS256", cfg.private_key_id)
    except KeyFileError as exc:
        problems.append(_key_problem(exc, cfg, at, show))
    return None


def _client_certificate(cfg: ProviderConfig, at: Loc, show: _Shower,
                        problems: list[Problem]) -> tuple[float, str] | None:
    """The client certificate's notAfter and the files' digest; None if unusable."""
    key = "tls_config" if cfg.tls_config is not None else "tls"
    tls = cfg.tls_config or cfg.tls
    if tls is None or tls.cert_file is None or tls.key_file is None:
        return None
    cert_at, key_at = (*at, key, "cert_file"), (*at, key, "key_file")
    try:
        not_after = certificate_not_after(tls.cert_file)
    except KeyFileError as exc:
        shown = show(cert_at, str(tls.cert_file))
        problems.append(Problem(cert_at, f"{exc.reason}{shown or ''}"))
        return None
    encrypted = False

    def no_passphrase() -> bytes:
        # Without a callback OpenSSL would prompt on the terminal for one.
        nonlocal encrypted
        encrypted = True
        return b""

    try:
        # A bare context: loading the system's CAs would cost milliseconds per
        # provider, and only the pair is checked here.
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(
            tls.cert_file, tls.key_file, password=no_passphrase)
        digest = hashlib.sha256(tls.cert_file.read_bytes() + b"\0" + tls.key_file.read_bytes())
    except (ssl.SSLError, OSError):
        why = ("is encrypted; give the exporter an unencrypted key file" if encrypted
               else "is not the private key of cert_file (or not a PEM private key)")
        problems.append(Problem(key_at, f"{why}{show(key_at, str(tls.key_file)) or ''}"))
        return None
    return not_after, digest.hexdigest()


def _load_files(cfg: ProviderConfig, at: Loc, show: _Shower,
                problems: list[Problem]) -> _Loaded | None:
    """Read what the provider's keys name; None (with problems) if anything is unusable."""
    before = len(problems)
    loaded = _Loaded()
    loaded.secret = _read_secret(cfg.client_secret, cfg.client_secret_file, at, show, problems)
    loaded.signing_key = _signing_key(cfg, loaded.secret, at, show, problems)
    certificates: list[tuple[str, float]] = []
    client_cert = _client_certificate(cfg, at, show, problems)
    if client_cert is not None:
        certificates.append(("tls", client_cert[0]))
        loaded.tls_identity = client_cert[1]
    if loaded.signing_key is not None and cfg.signing_certificate_file is not None:
        # load_private_key has read and checked it already.
        certificates.append(("signing", certificate_not_after(
            cfg.signing_certificate_file, field="signing_certificate_file")))
    loaded.certificates = tuple(certificates)
    for j, q in enumerate(cfg.probes):
        credential = None
        if q.client_id is not None:
            secret = _read_secret(q.client_secret, q.client_secret_file, (*at, "probes", j),
                                  show, problems)
            credential = ClientCredential(q.client_id, q.auth_method or "client_secret_basic",
                                          SecretStr(secret) if secret is not None else None)
        loaded.probe_credentials.append(credential)
    return loaded if len(problems) == before else None


def _resolve(cfg: ProviderConfig, loaded: _Loaded) -> Provider:
    preset = PRESETS[cfg.preset]
    headers = _merge_headers(dict(preset.probe_headers), cfg.headers)
    scope = cfg.scope if cfg.scope is not None else preset.default_scope
    probes = tuple(
        Probe(
            name=p.name,
            url=p.url or "",
            method="POST" if p.kind == "introspection" else p.method,
            expect_status=frozenset(p.expect_status),
            interval=p.interval or cfg.probe_interval,
            timeout=p.timeout or cfg.timeout,
            headers=_merge_headers(headers, p.headers),
            body=p.body,
            auth=p.auth,
            kind=p.kind,
            credential=credential,
        )
        for p, credential in zip(cfg.probes, loaded.probe_credentials, strict=True)
    )
    fields = cfg.model_fields_set
    tls = cfg.tls_config or cfg.tls
    outbound = Outbound(
        ca_file=str(tls.ca_file) if tls and tls.ca_file else None,
        cert_file=str(tls.cert_file) if tls and tls.cert_file else None,
        key_file=str(tls.key_file) if tls and tls.key_file else None,
        insecure_skip_verify=bool(tls and tls.insecure_skip_verify),
        proxy_url=cfg.proxy_url,
        identity=loaded.tls_identity,
    )
    token_url = cfg.token_url or (preset.token_url if cfg.issuer is None else None) or ""
    revocation_url = cfg.revocation_url
    if revocation_url is None and preset.revocation_path and token_url:
        origin = httpx.URL(token_url)
        revocation_url = str(origin.copy_with(path=preset.revocation_path, query=None))
    return Provider(
        name=cfg.name,
        preset=preset,
        token_url=token_url,
        client_id=cfg.client_id,
        client_secret=SecretStr(loaded.secret) if loaded.secret is not None else None,
        auth_method=cfg.auth_method or preset.auth_method,
        scope=scope or None,
        token_params=dict(cfg.token_params),
        headers=headers,
        client_secret_expires_at=(
            cfg.client_secret_expires_at.timestamp() if cfg.client_secret_expires_at else None
        ),
        token_rate_limit=(
            cfg.token_rate_limit if "token_rate_limit" in fields else preset.token_rate_limit
        ),
        default_lifetime=cfg.token_lifetime or preset.default_lifetime,
        timeout=cfg.timeout,
        renew_at_fraction=cfg.renew_at_fraction,
        renew_jitter=cfg.renew_jitter,
        backoff_initial=cfg.backoff_initial,
        backoff_max=cfg.backoff_max,
        max_response_bytes=cfg.max_response_bytes,
        probes=probes,
        outbound=outbound,
        revoke_on_shutdown=cfg.revoke_on_shutdown,
        revocation_url=revocation_url,
        issuer=cfg.issuer,
        signing_key=loaded.signing_key,
        assertion_audience=cfg.assertion_audience or "token_endpoint",
        certificates=loaded.certificates,
        allow_insecure_http=cfg.allow_insecure_http,
    )


def _fail(doc: LocatedYaml, problems: list[Problem]) -> ConfigError:
    return doc.error(_inherited(doc, p) for p in problems)


def _providers_present(raw: Mapping[str, Any]) -> list[Problem]:
    if "providers" not in raw:
        return [Problem(("providers",), "required: list at least one provider")]
    if raw["providers"] is None or raw["providers"] == []:
        return [Problem(("providers",), "is empty: list at least one provider", key=True)]
    return []


def parse_config(text: str, path: str = "<config>", env: Mapping[str, str] | None = None,
                 *, now: float | None = None) -> Config:
    """Validate the text of a provider file; raise ConfigError naming what is wrong.

    ``env`` is where ``${VAR}`` is read (default: the process environment);
    ``now`` is the clock for warnings about dates (default: the system clock).
    """
    env = os.environ if env is None else env
    doc = compose_yaml(text, path, scope=named_items("providers", "provider"))
    raw_top = check_mapping(doc, "defaults and a providers list")
    interpolated = _Environment()
    raw: dict[str, Any] = _interpolate(dict(raw_top), (), env, interpolated)
    if interpolated.problems:
        raise _fail(doc, interpolated.problems)
    for loc in interpolated.bare:
        log.warning("%s: a $ followed by a name is kept as written; write ${NAME} to read "
                    "the environment, or $$ for a literal $", doc.locate(loc))
    show = _Shower(doc, interpolated)

    problems = _providers_present(raw)
    if raw.get("providers", []) is None:
        raw["providers"] = []  # "providers:" with nothing under it: reported just above
    # Defaults are validated on their own first, so their errors point at them
    # and are not repeated once per provider.
    try:
        defaults = Tunables.model_validate(raw.get("defaults") or {})
    except ValidationError as exc:
        raise _fail(doc, problems + _defaults_problems(doc, exc, show)) from None
    default_values = defaults.model_dump(exclude_unset=True)
    providers = raw.get("providers")
    if isinstance(providers, list):
        problems += _duplicate_names(doc, providers)
        raw["providers"] = [
            {**default_values, **p} if isinstance(p, dict) else p for p in providers
        ]
    try:
        file_cfg = FileConfig.model_validate(raw)
    except ValidationError as exc:
        problems += validation_problems(exc, show=show, model=FileConfig)
        raise _fail(doc, problems) from None
    if problems:
        raise _fail(doc, problems)

    resolved = []
    for i, pcfg in enumerate(file_cfg.providers):
        loaded = _load_files(pcfg, ("providers", i), show, problems)
        if loaded is not None:
            resolved.append(_resolve(pcfg, loaded))
    if problems:
        raise _fail(doc, problems)
    for i, pcfg in enumerate(file_cfg.providers):
        if pcfg.tls is not None:
            log.warning("%s: tls is the old name of tls_config (Prometheus' spelling); rename "
                        "it, tls is still read for now", doc.locate(("providers", i, "tls"),
                                                                    key=True))

    clock = time.time() if now is None else now
    for i, p in enumerate(resolved):
        if p.client_secret_expires_at is not None and p.client_secret_expires_at <= clock:
            log.warning("%s: is in the past: the client secret has probably expired; "
                        "renew it and update the date", doc.locate(
                            ("providers", i, "client_secret_expires_at")))
    sensitive = _sensitive(file_cfg, interpolated)
    return Config(path=path, providers=tuple(resolved), sensitive=tuple(sorted(sensitive)))


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a provider file."""
    return parse_config(read_config_text(path), os.fspath(path), env)


def summary(config: Config) -> str:
    """A human summary for --check-config; never prints a secret or URL userinfo."""
    lines = [f"{config.path}: {len(config.providers)} provider(s) OK"]
    for p in config.providers:
        expires = (
            datetime.fromtimestamp(p.client_secret_expires_at, UTC).isoformat()
            if p.client_secret_expires_at
            else "-"
        )
        endpoint = (f"issuer={mask_userinfo(p.issuer)}" if p.issuer
                    else f"token_url={mask_userinfo(p.token_url)}")
        lines.append(
            f"  {p.name}: preset={p.preset.name} {endpoint} "
            f"auth={p.auth_method} scope={p.scope or '-'} "
            f"rate_limit={p.token_rate_limit or '-'} secret_expires={expires} "
            f"probes={','.join(pr.name for pr in p.probes) or '-'}"
        )
    redactor = Redactor()
    redactor.add(*config.secrets())
    return redactor.redact("\n".join(lines))
