"""The web config file (``--web.config.file``): TLS, basic auth and a rate limit for the endpoints.

The format is the one Prometheus' exporter-toolkit defines for Go exporters
(node_exporter and friends), so one file can serve them all::

    tls_server_config:
      cert_file: server.crt            # relative paths: from this file's directory
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert
      client_ca_file: ca.crt
      min_version: TLS12
    http_server_config:
      headers: {Strict-Transport-Security: max-age=31536000}
    basic_auth_users:
      prometheus: $2b$10$...           # bcrypt hash (htpasswd -nBC 10 prometheus)
    rate_limit:                        # a token bucket over all requests: 429 beyond it
      interval: 100ms                  # one request per interval on average (0: off)
      burst: 20                        # and up to this many at once

Every key exporter-toolkit defines is either honoured or refused by name with
the reason, never ignored. The file, and the certificate, key and CA files it
names, are re-read when they change (``ReloadingWebConfig``), so a renewed
certificate is served without a restart, as exporter-toolkit does.

Where Python's ``ssl`` module cannot do what a key asks, the key is refused
with an explanation rather than ignored, so a file never silently gives less
protection than it says: ``cipher_suites``, ``curve_preferences``,
``client_allowed_sans``, inline ``cert``/``key``/``client_ca``, ``RequireAnyClientCert`` and
TLS 1.0/1.1. (TLS 1.2 is limited to ECDHE with AES-GCM or ChaCha20-Poly1305,
what a hardened ``cipher_suites`` list would pick anyway.) Keys that cannot
weaken anything are accepted and logged: ``prefer_server_cipher_suites`` (the
server's order is always preferred), ``http2`` (the exporter serves HTTP/1.1)
and ``RequestClientCert`` (no client certificate is requested; Go would not
verify it either, so every client is admitted in both cases).

Errors are ``ConfigError``s naming the file, line and field; they never show a
password hash, and the file holds no plaintext secret to show.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import re
import secrets
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

import bcrypt
from pydantic import (
    AfterValidator,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from exporter.config import Duration
from exporter.yamlfile import (
    ConfigError,
    LocatedYaml,
    compose_yaml,
    format_validation,
    locate,
    read_config_text,
)
from exporter.yamlfile import StrictModel as _Strict

log = logging.getLogger("exporter.webconfig")

#: The realm sent in ``WWW-Authenticate`` with every 401.
REALM = "token-health-exporter"

#: bcrypt only reads the first 72 bytes; longer passwords are refused.
_BCRYPT_MAX_PASSWORD = 72

_BCRYPT_HASH = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")

#: TLS 1.2 cipher suites: forward secrecy and AEAD only (Mozilla's "intermediate"
#: profile without DHE). TLS 1.3 suites are all AEAD and not configurable.
_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"

_TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}

_CLIENT_AUTH_NEEDS_CA = ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert")

#: The response headers exporter-toolkit lets a web config set, with the
#: values it allows (None: any value).
_HEADERS: dict[str, tuple[str, ...] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}

_UNSUPPORTED_TLS_KEYS = {
    "cipher_suites": (
        "is not supported: the exporter allows only ECDHE with AES-GCM or "
        "ChaCha20-Poly1305 in TLS 1.2 (TLS 1.3 suites are fixed); remove the key, or set "
        "min_version: TLS13"
    ),
    "curve_preferences": (
        "is not supported: Python's ssl module cannot restrict the key-exchange groups; "
        "remove the key"
    ),
    "client_allowed_sans": (
        "is not supported: use a client CA (client_ca_file) that signs only the clients "
        "you want to admit"
    ),
    "cert": "(an inline certificate) is not supported: use cert_file",
    "key": "(an inline key) is not supported: use key_file",
    "client_ca": "(an inline CA certificate) is not supported: use client_ca_file",
}


# --------------------------------------------------------------------------- the file


def _tls_version(value: str) -> str:
    if value in ("TLS10", "TLS11"):
        raise ValueError(f"{value} is not supported (insecure); use TLS12 or TLS13")
    if value not in _TLS_VERSIONS:
        raise ValueError("must be TLS12 or TLS13")
    return value


TLSVersionName = Annotated[str, AfterValidator(_tls_version)]
NonEmpty = Annotated[str, Field(min_length=1)]


class TLSServerConfig(_Strict):
    cert_file: NonEmpty
    key_file: NonEmpty
    client_auth_type: Literal[
        "NoClientCert",
        "RequestClientCert",
        "RequireAnyClientCert",
        "VerifyClientCertIfGiven",
        "RequireAndVerifyClientCert",
    ] = "NoClientCert"
    client_ca_file: NonEmpty | None = None
    min_version: TLSVersionName = "TLS12"
    max_version: TLSVersionName = "TLS13"
    #: Accepted for compatibility; the server's cipher order is always preferred.
    prefer_server_cipher_suites: bool | None = None
    # Known exporter-toolkit keys this exporter refuses (see _UNSUPPORTED_TLS_KEYS).
    cipher_suites: Any = None
    curve_preferences: Any = None
    client_allowed_sans: Any = None
    cert: Any = None
    key: Any = None
    client_ca: Any = None

    @field_validator(*_UNSUPPORTED_TLS_KEYS, mode="before")
    @classmethod
    def _unsupported(cls, value: object, info: ValidationInfo) -> None:
        if value is not None:
            raise ValueError(_UNSUPPORTED_TLS_KEYS[str(info.field_name)])
        return None

    @field_validator("client_auth_type")
    @classmethod
    def _no_unverified_certs(cls, value: str) -> str:
        if value == "RequireAnyClientCert":
            raise ValueError(
                "RequireAnyClientCert is not supported: Python's ssl module cannot accept "
                "a client certificate without verifying it; use RequireAndVerifyClientCert "
                "with client_ca_file"
            )
        return value


def _header_name(name: str) -> str:
    for known in _HEADERS:
        if known.lower() == name.lower():
            return known
    raise ValueError(
        f"header {name!r} cannot be set; allowed: {', '.join(_HEADERS)}"
    )


class HTTPServerConfig(_Strict):
    headers: dict[Annotated[str, AfterValidator(_header_name)], str] = Field(
        default_factory=dict
    )
    #: Accepted for compatibility; the exporter serves HTTP/1.1 only.
    http2: bool | None = None

    @field_validator("headers")
    @classmethod
    def _values(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            if not value.strip() or any(ord(c) < 32 or ord(c) == 127 for c in value):
                raise ValueError(f"{name}: the value must be non-empty, without control "
                                 "characters or line breaks")
            allowed = _HEADERS[name]
            if allowed is not None and value.lower() not in allowed:
                raise ValueError(f"{name} must be one of: {', '.join(allowed)}")
        return headers


def _username(value: str) -> str:
    if not value:
        raise ValueError("a user name must not be empty")
    if ":" in value:
        raise ValueError("a user name cannot contain ':' (HTTP basic auth splits on it)")
    return value


def _bcrypt_hash(value: str) -> str:
    # Never echo the value: a hash is not plaintext, but it is still not for logs.
    if not _BCRYPT_HASH.fullmatch(value):
        raise ValueError(
            "not a bcrypt hash (expected $2a$, $2b$ or $2y$, cost 04-31, 60 characters; "
            "make one with: htpasswd -nBC 10 USER)"
        )
    return value


class RateLimitConfig(_Strict):
    """exporter-toolkit's ``rate_limit``: a token bucket shared by all requests."""

    #: Time between two requests on average; 0 turns the limiter off. Go duration
    #: syntax (``100ms``, ``1s``, ``1m30s``) or seconds.
    interval: Duration = 0.0
    #: Requests allowed at once. Go's limiter with a burst of 0 refuses every
    #: request; that is never what anyone means, so it is an error here.
    burst: int = Field(0, validate_default=True)

    @field_validator("interval")
    @classmethod
    def _not_negative(cls, value: float) -> float:
        if value < 0:
            raise ValueError("must not be negative (0 turns the rate limit off)")
        return value

    @field_validator("burst")
    @classmethod
    def _burst(cls, value: int, info: ValidationInfo) -> int:
        if value < 0:
            raise ValueError("must not be negative")
        if value == 0 and info.data.get("interval", 0) > 0:
            raise ValueError(
                "must be at least 1 when interval is set: a burst of 0 would refuse every "
                "request"
            )
        return value


class WebConfigFile(_Strict):
    tls_server_config: TLSServerConfig | None = None
    http_server_config: HTTPServerConfig | None = None
    basic_auth_users: (
        dict[Annotated[str, AfterValidator(_username)],
             Annotated[str, AfterValidator(_bcrypt_hash)]]
        | None
    ) = None
    rate_limit: RateLimitConfig | None = None


# --------------------------------------------------------------------------- basic auth


def parse_basic_authorization(header: str | None) -> tuple[bytes, bytes] | None:
    """``Basic base64(user:password)`` -> (user, password), or None if malformed."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    return (user, password) if sep else None


class _Attempt(NamedTuple):
    """One ``Authorization`` header, looked up: what bcrypt needs, and what is known already."""

    password: bytes
    hashed: bytes
    #: The cache key of (user, hash, password).
    key: bytes
    #: The user name is configured.
    known: bool
    #: A check of these very credentials succeeded before.
    remembered: bool


class BasicAuth:
    """Checks HTTP basic credentials against bcrypt hashes.

    User names are compared in constant time (by their SHA-256, against every
    configured name) and an unknown name still costs one bcrypt, so timing
    tells nothing about which names exist. bcrypt runs one at a time, so a
    flood of wrong passwords uses one CPU at most. A successful check is
    remembered as a salted SHA-256 of (user, hash, password), never the
    password itself, so a scrape every 15 s costs one bcrypt, not one each.

    ``quick()`` answers without bcrypt when it can (a remembered success, or a
    header that cannot be right), so the web server runs only the rest,
    ``check()``, in a worker thread.
    """

    CACHE_SIZE = 256

    def __init__(self, users: Mapping[str, str]) -> None:
        if not users:
            raise ValueError("BasicAuth needs at least one user")
        self._users = [
            (hashlib.sha256(name.encode()).digest(), hashed.encode())
            for name, hashed in users.items()
        ]
        #: Equal for two BasicAuths with the same users and hashes, so a re-read
        #: web config that did not change them keeps this one and its cache.
        self.users_digest = hashlib.sha256(
            repr(sorted(users.items())).encode()).hexdigest()
        self._salt = secrets.token_bytes(32)
        self._verified: OrderedDict[bytes, None] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._bcrypt_lock = threading.Lock()

    @property
    def user_count(self) -> int:
        return len(self._users)

    def _cache_key(self, user: bytes, hashed: bytes, password: bytes) -> bytes:
        digest = hashlib.sha256(self._salt)
        for part in (user, hashed, password):
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
        return digest.digest()

    def _lookup(self, authorization: str | None) -> _Attempt | None:
        """What the header claims, or None for a header that cannot be right."""
        credentials = parse_basic_authorization(authorization)
        if credentials is None:
            return None
        user, password = credentials
        if len(password) > _BCRYPT_MAX_PASSWORD:
            return None
        wanted = hashlib.sha256(user).digest()
        found: bytes | None = None
        for name_digest, hashed in self._users:  # no early exit: same work for any name
            if hmac.compare_digest(name_digest, wanted):
                found = hashed
        # An unknown user is checked against a real hash too, then refused.
        hashed = found if found is not None else self._users[0][1]
        key = self._cache_key(user, hashed, password)
        known = found is not None
        return _Attempt(password, hashed, key, known, known and self._remembered(key))

    def _remembered(self, key: bytes) -> bool:
        with self._cache_lock:
            if key in self._verified:
                self._verified.move_to_end(key)
                return True
        return False

    def quick(self, authorization: str | None) -> bool | None:
        """True or False when known without bcrypt; None when ``check()`` must decide."""
        attempt = self._lookup(authorization)
        if attempt is None:
            return False
        return True if attempt.remembered else None

    def check(self, authorization: str | None) -> bool:
        """True if the ``Authorization`` header holds a configured user's password."""
        attempt = self._lookup(authorization)
        if attempt is None:
            return False
        if attempt.remembered:
            return True
        password, hashed, key, known, _ = attempt
        with self._bcrypt_lock:
            try:
                ok = bcrypt.checkpw(password, hashed)
            except ValueError:
                ok = False
        if not ok or not known:
            return False
        with self._cache_lock:
            self._verified[key] = None
            while len(self._verified) > self.CACHE_SIZE:
                self._verified.popitem(last=False)
        return True


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class WebConfig:
    """A validated web config, ready for the web server."""

    path: str
    ssl_context: ssl.SSLContext | None
    auth: BasicAuth | None
    #: Extra response headers from http_server_config.headers.
    headers: tuple[tuple[str, str], ...]
    #: One line per TLS/HTTP setting, for --check-config.
    description: tuple[str, ...]
    #: ``(interval seconds, burst)`` of rate_limit, or None when off.
    rate_limit: tuple[float, int] | None = None
    #: Files whose change means the config must be read again: the file itself and
    #: the certificate, key and CA files it names.
    files: tuple[str, ...] = ()

    def summary(self) -> str:
        return "\n".join([f"{self.path}: web config OK", *(f"  {d}" for d in self.description)])


class _NoPassphrase(Exception):
    pass


def _refuse_passphrase() -> str:
    # Without a callback OpenSSL would prompt on the terminal and block.
    raise _NoPassphrase


def _readable(path: Path) -> str | None:
    """Why the file cannot be read, or None."""
    try:
        with path.open("rb") as f:
            f.read(1)
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


def _ssl_context(
    tls: TLSServerConfig, base: Path, path: str, located: LocatedYaml
) -> ssl.SSLContext:
    def where(field: str) -> str:
        return locate(path, located, ("tls_server_config", field))

    def resolve(name: str) -> Path:
        return base / name

    errors: list[str] = []
    cert, key = resolve(tls.cert_file), resolve(tls.key_file)
    ca = resolve(tls.client_ca_file) if tls.client_ca_file else None
    for field, file in (("cert_file", cert), ("key_file", key), ("client_ca_file", ca)):
        if file is not None and (why := _readable(file)) is not None:
            errors.append(f"{where(field)}: cannot read {str(file)!r}: {why}")
    if tls.client_auth_type in _CLIENT_AUTH_NEEDS_CA and ca is None:
        errors.append(
            f"{where('client_ca_file')}: required with client_auth_type "
            f"{tls.client_auth_type} (the CA that signs client certificates)"
        )
    if ca is not None and tls.client_auth_type not in _CLIENT_AUTH_NEEDS_CA:
        errors.append(
            f"{where('client_ca_file')}: client certificates are not verified with "
            f"client_auth_type {tls.client_auth_type}; use RequireAndVerifyClientCert "
            "(or VerifyClientCertIfGiven), or remove client_ca_file"
        )
    if _TLS_VERSIONS[tls.min_version] > _TLS_VERSIONS[tls.max_version]:
        errors.append(f"{where('min_version')}: {tls.min_version} is above max_version "
                      f"{tls.max_version}")
    if errors:
        raise ConfigError("\n".join(errors))

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _TLS_VERSIONS[tls.min_version]
    ctx.maximum_version = _TLS_VERSIONS[tls.max_version]
    ctx.set_ciphers(_TLS12_CIPHERS)
    # A certificate that loads as a CA tells a bad cert_file from a bad key_file.
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=cert)
    except (ssl.SSLError, ValueError):
        raise ConfigError(
            f"{where('cert_file')}: {str(cert)!r} holds no PEM certificate"
        ) from None
    try:
        ctx.load_cert_chain(cert, key, password=_refuse_passphrase)
    except _NoPassphrase:
        raise ConfigError(
            f"{where('key_file')}: {str(key)!r} is encrypted with a passphrase, which the "
            "web config cannot supply; use an unencrypted key readable only by the exporter"
        ) from None
    except (ssl.SSLError, ValueError) as exc:
        reason = getattr(exc, "reason", None)
        why = (
            "does not match the certificate in cert_file"
            if reason == "KEY_VALUES_MISMATCH"
            else "holds no usable PEM private key"
        )
        raise ConfigError(f"{where('key_file')}: {str(key)!r} {why}") from None
    if tls.client_auth_type in _CLIENT_AUTH_NEEDS_CA:
        assert ca is not None
        try:
            ctx.load_verify_locations(cafile=ca)
        except (ssl.SSLError, ValueError):
            raise ConfigError(
                f"{where('client_ca_file')}: {str(ca)!r} holds no PEM certificate"
            ) from None
        ctx.verify_mode = (
            ssl.CERT_REQUIRED
            if tls.client_auth_type == "RequireAndVerifyClientCert"
            else ssl.CERT_OPTIONAL
        )
    return ctx


def parse_web_config(text: str, path: str, base_dir: Path) -> WebConfig:
    """Validate the text of a web config; relative file names are read from base_dir."""
    located = compose_yaml(text, path)
    raw = located.data if located.data is not None else {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping (tls_server_config, "
            "http_server_config, basic_auth_users)"
        )
    try:
        model = WebConfigFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError("\n".join(format_validation(path, located, exc))) from None

    description: list[str] = []
    files = [str(Path(path).absolute())]
    tls = model.tls_server_config
    ssl_context = None
    if tls is not None:
        files += [str((base_dir / name).absolute())
                  for name in (tls.cert_file, tls.key_file, tls.client_ca_file) if name]
        ssl_context = _ssl_context(tls, base_dir, path, located)
        description.append(
            f"TLS: cert_file={tls.cert_file} min_version={tls.min_version} "
            f"max_version={tls.max_version} client_auth_type={tls.client_auth_type}"
        )
        if tls.prefer_server_cipher_suites is not None:
            log.info("%s: prefer_server_cipher_suites has no effect: the server's cipher "
                     "order is always preferred", path)
        if tls.client_auth_type == "RequestClientCert":
            log.info("%s: client_auth_type RequestClientCert: no client certificate is "
                     "requested (it would not be verified); every client is admitted", path)
    else:
        description.append("TLS: off (plain HTTP)")

    http = model.http_server_config or HTTPServerConfig()
    if http.http2:
        log.info("%s: http2 has no effect: the exporter serves HTTP/1.1", path)
    headers = tuple(sorted(http.headers.items()))
    if headers:
        description.append(f"headers: {', '.join(name for name, _ in headers)}")

    auth = BasicAuth(model.basic_auth_users) if model.basic_auth_users else None
    if auth is not None:
        description.append(f"basic auth: {auth.user_count} user(s)")
        if ssl_context is None:
            log.warning("%s: basic_auth_users without tls_server_config: passwords cross "
                        "the network in clear text", path)
    else:
        description.append("basic auth: off")

    rate_limit = None
    if model.rate_limit is not None and model.rate_limit.interval > 0:
        rate_limit = (model.rate_limit.interval, model.rate_limit.burst)
        description.append(f"rate limit: one request per {rate_limit[0]:g}s, "
                           f"bursts of {rate_limit[1]} (429 beyond)")
    else:
        description.append("rate limit: off")
    return WebConfig(path, ssl_context, auth, headers, tuple(description), rate_limit,
                     tuple(files))


def load_web_config(path: str | os.PathLike[str]) -> WebConfig:
    """Read and validate a web config file; ConfigError names the file and field."""
    name = os.fspath(path)
    text = read_config_text(name, "web config file")
    return parse_web_config(text, name, Path(name).absolute().parent)


# --------------------------------------------------------------------------- re-reading

_Signature = tuple[tuple[int, int, int, int] | None, ...]


def _signature(files: tuple[str, ...]) -> _Signature:
    """What changes when any of the files is rewritten, replaced or renamed over."""
    out: list[tuple[int, int, int, int] | None] = []
    for name in files:
        try:
            st = os.stat(name)  # follows symlinks: a Kubernetes secret swaps its ..data link
        except OSError:
            out.append(None)
        else:
            out.append((st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev))
    return tuple(out)


class ReloadingWebConfig:
    """The web config in force, read again when its file or a file it names changes.

    exporter-toolkit re-reads the file on every request so that a renewed
    certificate is used at once. Here the files are ``stat``-ed at most once per
    ``check_interval`` (a connection flood costs no file reads) and parsed only
    when one changed. A file that no longer parses is logged once and the
    previous config stays in force, as for the provider file. Turning TLS on or
    off needs a restart (clients would be cut off, or sent passwords in clear
    text, without anyone asking for it). Unchanged users keep their
    ``BasicAuth`` and so its cache of verified passwords.
    """

    def __init__(self, initial: WebConfig, *, check_interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic,
                 load: Callable[[str], WebConfig] | None = None) -> None:
        self._config = initial
        self._check_interval = check_interval
        self._clock = clock
        self._load = load or load_web_config
        self._seen = _signature(initial.files)
        self._next_check = clock() + check_interval
        #: Re-reads that took effect, for tests and the log.
        self.reloads = 0

    def current(self) -> WebConfig:
        now = self._clock()
        if now < self._next_check or not self._config.files:
            return self._config
        self._next_check = now + self._check_interval
        signature = _signature(self._config.files)
        if signature == self._seen:
            return self._config
        self._seen = signature
        try:
            new = self._load(self._config.path)
        except ConfigError as exc:
            log.error("web config changed but cannot be used; the previous one stays in "
                      "force:\n%s", exc)
            return self._config
        if (new.ssl_context is None) != (self._config.ssl_context is None):
            log.error("%s: turning TLS on or off needs a restart; the previous web config "
                      "stays in force", new.path)
            return self._config
        old_auth = self._config.auth
        if old_auth is not None and new.auth is not None and (
                new.auth.users_digest == old_auth.users_digest):
            new = replace(new, auth=old_auth)
        # The new config may name other files (or the same ones, changed again
        # since the stat above): watch what it names from now on.
        self._seen = _signature(new.files) if new.files != self._config.files else signature
        self._config = new
        self.reloads += 1
        log.info("web config re-read from %s", new.path)
        return new
