"""Logging set-up: logfmt or JSON lines, Prometheus spellings, secrets redacted.

Output looks like a Prometheus binary's (go-kit logfmt, or the same keys as
JSON)::

    ts=2026-12-02T09:30:00.123Z level=warn caller=renewal.py:139 logger=exporter.renewal \
        provider=simpledocs-prod msg="token request failed" error=rate_limited

`--log.level` takes debug|info|warn|error (warning is an alias), `--log.format`
logfmt|json (text is an alias). The level applies to this program's loggers
(`exporter.*`); other libraries' loggers (httpx, httpcore, asyncio, ...)
stay at warning, because their info and debug lines are about their
own internals and would drown ours, unless `--log.library-level` asks for more.

A line about one credential carries `provider=` (and `probe=`) as fields:
log through `log_for(logger, provider, probe)`, a LoggerAdapter. Any other
`extra={...}` key becomes a field too.

Redaction works on every value of the line, the message and the exception
text included, so a secret that reaches a log record by any path (our message,
a library's exception, a traceback) is replaced before it is written, and
before quoting or JSON escaping could disguise it. The redactor is told every
value the config marks as sensitive at load (client secrets, values read
from the environment, URL userinfo: ``Config.secrets()``) and every access
token when it arrives; the userinfo of any URL in a line is masked as well,
known or not.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections import OrderedDict
from collections.abc import Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any, TextIO

REDACTED = "<redacted>"
#: Shorter values are not redacted: replacing "a" everywhere would garble logs,
#: and such a value is no secret worth the name.
MIN_SECRET_LENGTH = 4

#: scheme://authority, the authority running to the first / ? # or space.
_URL_AUTHORITY = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://)([^/?#\s]*@)")


def mask_userinfo(text: str) -> str:
    """Replace the ``user:password@`` of every URL in ``text`` with ``<redacted>@``.

    The whole userinfo goes, not only the password: an API key is often sent
    as the user name (``https://KEY@host/``).
    """
    return _URL_AUTHORITY.sub(lambda m: f"{m.group(1)}{REDACTED}@", text)


class Redactor:
    """Replaces known secret values in text. Thread-safe; bounded in size."""

    def __init__(self, max_values: int = 50_000) -> None:
        self._values: OrderedDict[str, None] = OrderedDict()
        self._max = max_values
        self._lock = threading.Lock()
        #: The values longest first, rebuilt only when a value is added.
        self._ordered: tuple[str, ...] | None = ()

    def add(self, *values: str) -> None:
        with self._lock:
            for value in values:
                if len(value) >= MIN_SECRET_LENGTH:
                    self._values[value] = None
                    self._values.move_to_end(value)
            while len(self._values) > self._max:
                self._values.popitem(last=False)
            self._ordered = None

    def redact(self, text: str) -> str:
        with self._lock:
            if self._ordered is None:
                # Longest first, so a secret that contains another is replaced whole.
                self._ordered = tuple(sorted(self._values, key=len, reverse=True))
            values = self._ordered
        for value in values:
            if value in text:
                text = text.replace(value, REDACTED)
        return mask_userinfo(text) if "@" in text else text


#: --log.level spellings (Prometheus': debug|info|warn|error) and their aliases.
LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
LEVEL_ALIASES = {"warning": "warn"}
#: --log.format spellings and their aliases.
FORMATS = ("logfmt", "json")
FORMAT_ALIASES = {"text": "logfmt"}

#: The level names written on each line, as Prometheus writes them.
_LEVEL_NAMES = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warn",
    logging.ERROR: "error",
    logging.CRITICAL: "error",
}

#: Our own loggers; everything else is a library.
PROGRAM_LOGGER = "exporter"

#: Fields that go before `msg`, in this order, when a record has them.
_LEADING_FIELDS = ("provider", "probe")
#: Attributes every LogRecord has: anything else on a record came from `extra=`.
_RECORD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None))
) | {"message", "asctime", "taskName"}


def canonical_level(name: str) -> str:
    """`warning` -> `warn`; raises ValueError for a name that is no level."""
    if name not in LEVELS:
        raise ValueError(f"unknown log level {name!r}: use debug, info, warn or error")
    return LEVEL_ALIASES.get(name, name)


def canonical_format(name: str) -> str:
    """`text` -> `logfmt`; raises ValueError for a name that is no format."""
    name = FORMAT_ALIASES.get(name, name)
    if name not in FORMATS:
        raise ValueError(f"unknown log format {name!r}: use logfmt or json")
    return name


class CredentialLogger(logging.LoggerAdapter[logging.Logger]):
    """Adds `provider` (and `probe`) to every record, merged with call-site `extra`.

    The stdlib adapter replaces a call's `extra` with its own (before 3.13);
    this one keeps both, the call's keys winning.
    """

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        given = kwargs.get("extra") or {}
        kwargs["extra"] = {**(self.extra or {}), **given}
        return msg, kwargs


def log_for(
    logger: logging.Logger | str, provider: str, probe: str | None = None
) -> CredentialLogger:
    """A logger whose lines carry `provider=` (and `probe=`) as fields.

    `log_for(log, "simpledocs-prod").warning("token request failed")`, or with a
    probe, `log_for(log, provider, "documents")`. The names come from the
    config, so they are safe to log.
    """
    if isinstance(logger, str):
        logger = logging.getLogger(logger)
    extra: dict[str, object] = {"provider": provider}
    if probe is not None:
        extra["probe"] = probe
    return CredentialLogger(logger, extra)


def _logfmt_value(value: str) -> str:
    if value and not any(c in value for c in ' ="\\') and value.isprintable():
        return value
    escaped = (
        value.replace("\\", "\\\\").replace('"', '\\"')
        .replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    )
    if not escaped.isprintable():
        escaped = "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in escaped)
    return f'"{escaped}"'


class _RedactingFormatter(logging.Formatter):
    """One line per record, logfmt or JSON, every value redacted."""

    def __init__(self, redactor: Redactor, fmt: str) -> None:
        super().__init__()
        self._redactor = redactor
        self._json = canonical_format(fmt) == "json"

    def fields(self, record: logging.LogRecord) -> list[tuple[str, object]]:
        """The line's key/value pairs, in order, values redacted."""
        redact = self._redactor.redact
        when = datetime.fromtimestamp(record.created, UTC)
        pairs: list[tuple[str, object]] = [
            ("ts", f"{when:%Y-%m-%dT%H:%M:%S}.{when.microsecond // 1000:03d}Z"),
            ("level", _LEVEL_NAMES.get(record.levelno, record.levelname.lower())),
            ("caller", f"{record.filename}:{record.lineno}"),
            ("logger", record.name),
        ]
        attributes: Mapping[str, object] = vars(record)
        for key in _LEADING_FIELDS:
            if attributes.get(key) is not None:
                pairs.append((key, redact(str(attributes[key]))))
        pairs.append(("msg", redact(record.getMessage())))
        for key, value in attributes.items():
            if key in _RECORD_ATTRIBUTES or key in _LEADING_FIELDS or key.startswith("_"):
                continue
            # Numbers stay numbers in JSON; anything else is text, redacted.
            pairs.append((key, value if isinstance(value, int | float) else redact(str(value))))
        if record.exc_info:
            pairs.append(("exception", redact(self.formatException(record.exc_info))))
        elif record.exc_text:
            pairs.append(("exception", redact(record.exc_text)))
        if record.stack_info:
            pairs.append(("stack", redact(self.formatStack(record.stack_info))))
        return pairs

    def format(self, record: logging.LogRecord) -> str:
        pairs = self.fields(record)
        if self._json:
            return json.dumps(dict(pairs), ensure_ascii=False)
        return " ".join(
            f"{key}={_logfmt_value(value if isinstance(value, str) else json.dumps(value))}"
            for key, value in pairs
        )


def setup_logging(
    level: str,
    fmt: str,
    redactor: Redactor,
    stream: TextIO | None = None,
    library_level: str = "warn",
) -> logging.Handler:
    """Install one handler on the root logger; return it (tests remove it).

    `level` and `fmt` take the flags' spellings, aliases included. `level`
    applies to the `exporter` loggers; every other logger gets `library_level`
    or `level`, whichever is less verbose, so `--log.level=error` quiets
    libraries too.
    """
    ours = LEVELS[canonical_level(level)]
    libraries = max(ours, LEVELS[canonical_level(library_level)])
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_RedactingFormatter(redactor, fmt))
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_token_exporter", False):
            root.removeHandler(old)
    handler._token_exporter = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    # The root level is what every library logger inherits (none of them sets
    # its own); ours is set on the `exporter` logger, which all ours inherit.
    root.setLevel(libraries)
    logging.getLogger(PROGRAM_LOGGER).setLevel(ours)
    return handler
