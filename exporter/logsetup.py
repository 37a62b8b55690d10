"""Logging set-up: text or JSON lines, with secrets and tokens redacted.

Redaction works on the final formatted line, exception text included, so a
secret that reaches a log record by any path (our message, a library's
exception, a traceback) is replaced before it is written. The redactor is told
every value the config marks as sensitive at load (client secrets, values read
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
from datetime import UTC, datetime
from typing import TextIO

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


class _RedactingFormatter(logging.Formatter):
    def __init__(self, redactor: Redactor, json_lines: bool) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._redactor = redactor
        self._json = json_lines

    def format(self, record: logging.LogRecord) -> str:
        if not self._json:
            return self._redactor.redact(super().format(record))
        doc: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return self._redactor.redact(json.dumps(doc, ensure_ascii=False))


def setup_logging(
    level: str, fmt: str, redactor: Redactor, stream: TextIO | None = None
) -> logging.Handler:
    """Install one handler on the root logger; return it (tests remove it)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_RedactingFormatter(redactor, fmt == "json"))
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_token_exporter", False):
            root.removeHandler(old)
    handler._token_exporter = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # APScheduler and httpx log every job run and request at INFO: noise at
    # our scale. At debug level they are let through (still redacted).
    quiet = logging.WARNING if level.lower() != "debug" else logging.DEBUG
    for name in ("apscheduler", "httpx", "httpcore"):
        logging.getLogger(name).setLevel(quiet)
    return handler
