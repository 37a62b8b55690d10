"""The provider file: YAML in, validated and resolved provider settings out.

Loading goes in four steps, each of which can fail with a ``ConfigError`` that
names the file, the provider, the field and (where known) the line, and never
the value of a secret:

1. parse the YAML and remember the line of every key (duplicate keys are
   errors, not silently dropped as PyYAML would);
2. replace ``${VAR}`` in every string with the environment variable
   (``$${`` is a literal ``${``);
3. merge ``defaults`` into each provider and validate with pydantic
   (unknown keys rejected, secrets held as ``SecretStr``);
4. apply the preset: default token URL, auth method, scope, lifetime, rate
   limit and the headers the provider's API needs.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from exporter.presets import PRESETS, AuthMethod, Preset, RateLimit

# --------------------------------------------------------------------------- durations

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


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
                    f"invalid duration {value!r}: use e.g. 500ms, 30s, 5m, 1h or seconds"
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
        raise ValueError(f"invalid rate limit {value!r}: use REQUESTS/PERIOD such as 10/1m")
    seconds = parse_duration(period)
    if seconds <= 0:
        raise ValueError("rate limit period must be greater than zero")
    return RateLimit(int(count), seconds)


# --------------------------------------------------------------------------- models

_NAME = r"^[A-Za-z0-9_-]+$"
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
        raise ValueError(f"invalid URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("must be an absolute http:// or https:// URL")
    if not _valid_host(url.host):
        raise ValueError(f"invalid URL: bad host {url.host!r}")
    return value


HttpUrl = Annotated[str, BeforeValidator(lambda v: _check_url(v) if isinstance(v, str) else v)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Tunables(_Strict):
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


class ProbeConfig(_Strict):
    name: str = Field(pattern=_NAME)
    url: HttpUrl
    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] = "GET"
    expect_status: list[Annotated[int, Field(ge=100, le=599)]] = Field(
        default_factory=lambda: [200], min_length=1
    )
    interval: PositiveDuration | None = None
    timeout: PositiveDuration | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    body: str | None = None
    auth: Literal["bearer", "none"] = "bearer"

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


class TLSConfig(_Strict):
    """Outbound TLS for the token endpoint and the probes of one provider."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure_skip_verify: bool = False

    @model_validator(mode="after")
    def _check(self) -> TLSConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be set together")
        for name in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, name)
            if path is not None and not os.access(path, os.R_OK):
                raise ValueError(f"{name} {str(path)!r} is not a readable file")
        return self


class ProviderConfig(Tunables):
    name: str = Field(pattern=_NAME)
    preset: Literal[
        "simpledocs", "smartdocumentor", "simplifi", "simplestore", "dokstamp", "generic"
    ] = "generic"
    token_url: HttpUrl | None = None
    client_id: str = Field(min_length=1)
    client_secret: SecretStr | None = None
    client_secret_file: Path | None = None
    auth_method: AuthMethod | None = None
    scope: str | None = None
    token_params: dict[str, str] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    client_secret_expires_at: datetime | None = None
    token_rate_limit: Annotated[RateLimit | None, BeforeValidator(parse_rate_limit)] = None
    #: Lifetime to assume when the server states none (default: the preset's).
    token_lifetime: PositiveDuration | None = None
    allow_insecure_http: bool = False
    tls: TLSConfig | None = None
    proxy_url: HttpUrl | None = None
    #: Revoke the held token at shutdown (RFC 7009), so no token outlives us.
    revoke_on_shutdown: bool = False
    revocation_url: HttpUrl | None = None
    probes: list[ProbeConfig] = Field(default_factory=list)

    @field_validator("token_params")
    @classmethod
    def _no_reserved_params(cls, value: dict[str, str]) -> dict[str, str]:
        reserved = {"grant_type", "client_id", "client_secret", "scope"} & value.keys()
        if reserved:
            raise ValueError(
                f"{', '.join(sorted(reserved))} cannot be set in token_params; "
                "use the provider keys instead"
            )
        return value

    @field_validator("client_secret_expires_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    @model_validator(mode="after")
    def _check(self) -> ProviderConfig:
        if (self.client_secret is None) == (self.client_secret_file is None):
            raise ValueError("set exactly one of client_secret and client_secret_file")
        preset = PRESETS[self.preset]
        if self.token_url is None and preset.token_url is None:
            raise ValueError(f"token_url is required for preset {self.preset}")
        if preset.required_scope is not None and self.scope not in (None, preset.required_scope):
            raise ValueError(
                f"scope must be {preset.required_scope!r} for preset {self.preset} "
                "(the provider rejects any other)"
            )
        url = httpx.URL(self.token_url or preset.token_url or "")
        if url.scheme == "http" and not is_loopback_host(url.host) and not (
            self.allow_insecure_http
        ):
            raise ValueError(
                "token_url uses plain http outside loopback, which would send the client "
                "secret in clear; use https or set allow_insecure_http: true"
            )
        names = [p.name for p in self.probes]
        dupes = sorted(n for n, count in Counter(names).items() if count > 1)
        if dupes:
            raise ValueError(f"duplicate probe name(s): {', '.join(dupes)}")
        if self.revoke_on_shutdown and not (self.revocation_url or preset.revocation_path):
            raise ValueError(
                f"revoke_on_shutdown needs a revocation_url (preset {self.preset} has none)"
            )
        if self.backoff_initial > self.backoff_max:
            raise ValueError("backoff_initial must not exceed backoff_max")
        return self


class FileConfig(_Strict):
    defaults: Tunables = Field(default_factory=lambda: Tunables())
    providers: list[ProviderConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> FileConfig:
        names = [p.name for p in self.providers]
        dupes = sorted(n for n, count in Counter(names).items() if count > 1)
        if dupes:
            raise ValueError(f"duplicate provider name(s): {', '.join(dupes)}")
        return self


# --------------------------------------------------------------------------- resolved


@dataclass(frozen=True)
class Probe:
    name: str
    url: str
    method: str
    expect_status: frozenset[int]
    interval: float
    timeout: float
    headers: Mapping[str, str]
    body: str | None
    auth: Literal["bearer", "none"]


@dataclass(frozen=True)
class Outbound:
    """How to reach a provider: TLS trust and identity, proxy. Shared clients are keyed by it."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure_skip_verify: bool = False
    proxy_url: str | None = None


@dataclass(frozen=True)
class Provider:
    """One credential at one token endpoint, with every default applied."""

    name: str
    preset: Preset
    token_url: str
    client_id: str
    client_secret: SecretStr
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

    @property
    def token_host(self) -> str:
        """The rate-limit key: scheme-less host[:port] of the token endpoint."""
        url = httpx.URL(self.token_url)
        return f"{url.host}:{url.port}" if url.port else url.host

    @property
    def credential_key(self) -> tuple[str, str, str, str | None, tuple[tuple[str, str], ...]]:
        """What identifies the token this provider holds: same key, same token."""
        return (
            self.token_url,
            self.client_id,
            self.client_secret.get_secret_value(),
            self.scope,
            tuple(sorted(self.token_params.items())),
        )


@dataclass(frozen=True)
class Config:
    path: str
    providers: tuple[Provider, ...]

    def secrets(self) -> list[str]:
        """Every secret value in the config, for log redaction."""
        return [p.client_secret.get_secret_value() for p in self.providers]


# --------------------------------------------------------------------------- errors


class ConfigError(Exception):
    """A configuration problem; the message is safe to print (no secret values)."""


@dataclass
class LocatedYaml:
    """Parsed YAML plus the line of every key, by path."""

    data: Any
    lines: dict[tuple[str | int, ...], int]


class _LineLoader(yaml.SafeLoader):
    pass


def compose_yaml(text: str, path: str) -> LocatedYaml:
    try:
        node = yaml.compose(text, Loader=_LineLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    lines: dict[tuple[str | int, ...], int] = {}

    def walk(n: yaml.Node, at: tuple[str | int, ...]) -> None:
        lines.setdefault(at, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in n.value:
                key = str(key_node.value)
                if key in seen:
                    where = ".".join(str(p) for p in at) or "top level"
                    raise ConfigError(
                        f"{path}:{key_node.start_mark.line + 1}: duplicate key {key!r} "
                        f"in {where}"
                    )
                seen.add(key)
                lines[(*at, key)] = key_node.start_mark.line + 1
                walk(value_node, (*at, key))
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                walk(item, (*at, i))

    if node is not None:
        walk(node, ())
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:  # pragma: no cover - compose already parsed it
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    return LocatedYaml(data, lines)


def locate(path: str, located: LocatedYaml, loc: tuple[str | int, ...]) -> str:
    """``file:line: provider "x": field "a.b"`` for an error location."""
    line = None
    for n in range(len(loc), -1, -1):
        if loc[:n] in located.lines:
            line = located.lines[loc[:n]]
            break
    parts = [f"{path}:{line}" if line else path]
    rest = loc
    if len(loc) >= 2 and loc[0] == "providers" and isinstance(loc[1], int):
        name = None
        providers = located.data.get("providers") if isinstance(located.data, dict) else None
        if isinstance(providers, list) and loc[1] < len(providers):
            item = providers[loc[1]]
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                name = item["name"]
        parts.append(f'provider "{name}"' if name else f"provider #{loc[1] + 1}")
        rest = loc[2:]
    if rest:
        parts.append("field " + '"' + ".".join(str(p) for p in rest) + '"')
    return ": ".join(parts)


# --------------------------------------------------------------------------- loading

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _interpolate(
    value: Any, at: tuple[str | int, ...], env: Mapping[str, str], errors: list[tuple[Any, str]]
) -> Any:
    if isinstance(value, str):

        def sub(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name = match.group(1)
            if name not in env:
                errors.append((at, f"environment variable {name} is not set"))
                return ""
            return env[name]

        return _VAR.sub(sub, value)
    if isinstance(value, dict):
        return {k: _interpolate(v, (*at, str(k)), env, errors) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, (*at, i), env, errors) for i, v in enumerate(value)]
    return value


def _read_secret_file(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ValueError(f"cannot read client_secret_file {str(path)!r}: {reason}") from None
    secret = text.strip("\r\n")
    if not secret:
        raise ValueError(f"client_secret_file {str(path)!r} is empty")
    return secret


def _resolve(cfg: ProviderConfig, secret: str) -> Provider:
    preset = PRESETS[cfg.preset]
    headers = dict(preset.probe_headers)
    headers.update(cfg.headers)
    scope = cfg.scope if cfg.scope is not None else preset.default_scope
    probes = tuple(
        Probe(
            name=p.name,
            url=p.url,
            method=p.method,
            expect_status=frozenset(p.expect_status),
            interval=p.interval or cfg.probe_interval,
            timeout=p.timeout or cfg.timeout,
            headers={**headers, **p.headers},
            body=p.body,
            auth=p.auth,
        )
        for p in cfg.probes
    )
    fields = cfg.model_fields_set
    tls = cfg.tls
    outbound = Outbound(
        ca_file=str(tls.ca_file) if tls and tls.ca_file else None,
        cert_file=str(tls.cert_file) if tls and tls.cert_file else None,
        key_file=str(tls.key_file) if tls and tls.key_file else None,
        insecure_skip_verify=bool(tls and tls.insecure_skip_verify),
        proxy_url=cfg.proxy_url,
    )
    token_url = cfg.token_url or preset.token_url or ""
    revocation_url = cfg.revocation_url
    if revocation_url is None and preset.revocation_path:
        origin = httpx.URL(token_url)
        revocation_url = str(origin.copy_with(path=preset.revocation_path, query=None))
    return Provider(
        name=cfg.name,
        preset=preset,
        token_url=token_url,
        client_id=cfg.client_id,
        client_secret=SecretStr(secret),
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
    )


def format_validation(
    path: str, located: LocatedYaml, exc: ValidationError, prefix: tuple[str, ...] = ()
) -> list[str]:
    out = []
    for err in exc.errors(include_input=False, include_url=False):
        # pydantic adds union/validator names such as "function-after[...]" to loc.
        loc = prefix + tuple(p for p in err["loc"] if not isinstance(p, str) or "[" not in p)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        out.append(f"{locate(path, located, loc)}: {msg}")
    return out


def parse_config(text: str, path: str = "<config>", env: Mapping[str, str] | None = None) -> Config:
    """Validate the text of a provider file; raise ConfigError naming what is wrong."""
    env = os.environ if env is None else env
    located = compose_yaml(text, path)
    raw = located.data if located.data is not None else {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping with a providers list")
    var_errors: list[tuple[Any, str]] = []
    raw = _interpolate(raw, (), env, var_errors)
    if var_errors:
        raise ConfigError(
            "\n".join(f"{locate(path, located, at)}: {msg}" for at, msg in var_errors)
        )

    # defaults are validated on their own first, so their errors point at them.
    try:
        defaults = Tunables.model_validate(raw.get("defaults") or {})
    except ValidationError as exc:
        lines = format_validation(path, located, exc, ("defaults",))
        raise ConfigError("\n".join(lines)) from None
    default_values = defaults.model_dump(exclude_unset=True)
    providers = raw.get("providers")
    if isinstance(providers, list):
        raw["providers"] = [
            {**default_values, **p} if isinstance(p, dict) else p for p in providers
        ]
    try:
        file_cfg = FileConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError("\n".join(format_validation(path, located, exc))) from None

    resolved = []
    errors = []
    for i, pcfg in enumerate(file_cfg.providers):
        try:
            if pcfg.client_secret is not None:
                secret = pcfg.client_secret.get_secret_value()
                if not secret:
                    raise ValueError("client_secret is empty")
            else:
                assert pcfg.client_secret_file is not None
                secret = _read_secret_file(pcfg.client_secret_file)
        except ValueError as exc:
            field = "client_secret" if pcfg.client_secret is not None else "client_secret_file"
            errors.append(f"{locate(path, located, ('providers', i, field))}: {exc}")
            continue
        resolved.append(_resolve(pcfg, secret))
    if errors:
        raise ConfigError("\n".join(errors))
    return Config(path=path, providers=tuple(resolved))


def read_config_text(path: str | os.PathLike[str], what: str = "config file") -> str:
    """The text of a config file; ConfigError naming the file if it cannot be read."""
    name = os.fspath(path)
    try:
        return Path(name).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {what}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{name}: {what} is not UTF-8 text") from None


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a provider file."""
    return parse_config(read_config_text(path), os.fspath(path), env)


def summary(config: Config) -> str:
    """A human summary for --check-config; never prints a secret."""
    lines = [f"{config.path}: {len(config.providers)} provider(s) OK"]
    for p in config.providers:
        expires = (
            datetime.fromtimestamp(p.client_secret_expires_at, UTC).isoformat()
            if p.client_secret_expires_at
            else "-"
        )
        lines.append(
            f"  {p.name}: preset={p.preset.name} token_url={p.token_url} "
            f"auth={p.auth_method} scope={p.scope or '-'} "
            f"rate_limit={p.token_rate_limit or '-'} secret_expires={expires} "
            f"probes={','.join(pr.name for pr in p.probes) or '-'}"
        )
    return "\n".join(lines)
