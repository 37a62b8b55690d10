"""Log output: text and JSON lines, secrets redacted even in library exceptions."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import httpx
import pytest

from exporter.logsetup import REDACTED, Redactor, setup_logging

SECRET = "log-secret-9JxPq"
TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjF9.c2ln"


@pytest.fixture
def capture() -> Iterator[tuple[io.StringIO, Redactor]]:
    stream, redactor = io.StringIO(), Redactor()
    redactor.add(SECRET, TOKEN)
    handler = setup_logging("debug", "json", redactor, stream=stream)
    try:
        yield stream, redactor
    finally:
        logging.getLogger().removeHandler(handler)


def test_json_lines_redact_messages_and_library_exceptions(
    capture: tuple[io.StringIO, Redactor],
) -> None:
    stream, _ = capture
    log = logging.getLogger("exporter.test")
    log.info("a message that should never hold %s", SECRET)
    try:
        # A library building an exception from a request that carries the token.
        request = httpx.Request("GET", f"https://api.example/?access_token={TOKEN}")
        raise httpx.ConnectError(f"failed {request.url}", request=request)
    except httpx.ConnectError:
        log.exception("probe failed")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["level"] for line in lines] == ["info", "error"]
    assert lines[0]["logger"] == "exporter.test"
    assert REDACTED in lines[0]["msg"] and REDACTED in lines[1]["exception"]
    text = stream.getvalue()
    assert SECRET not in text and TOKEN not in text


def test_text_format_and_levels() -> None:
    stream, redactor = io.StringIO(), Redactor()
    redactor.add(SECRET)
    handler = setup_logging("warning", "text", redactor, stream=stream)
    try:
        logging.getLogger("exporter.x").info("hidden")
        logging.getLogger("exporter.x").warning("shown %s", SECRET)
    finally:
        logging.getLogger().removeHandler(handler)
    out = stream.getvalue()
    assert "hidden" not in out
    # "warning" and "text" are aliases of Prometheus' "warn" and "logfmt".
    assert " level=warn caller=test_logsetup.py:" in out
    assert " logger=exporter.x msg=\"shown <redacted>\"" in out


def test_redactor_is_bounded_and_replaces_longest_first() -> None:
    redactor = Redactor(max_values=2)
    redactor.add("old1", "old2", "x", "mid1", "abcd", "abcdefgh")  # "x": too short
    assert redactor.redact("old1 old2 x") == "old1 old2 x"  # the oldest were evicted
    assert redactor.redact("mid1") == "mid1"
    # The longer value wins where one contains the other.
    assert redactor.redact("abcdefgh abcd") == f"{REDACTED} {REDACTED}"
