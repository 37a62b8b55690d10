"""gzip for /metrics: ISA-L's where the speed extra is installed, else zlib's."""

from __future__ import annotations

import gzip

import pytest

from exporter.web import compression
from exporter.web.compression import GZIP_ENGINE, gzip_compress

BODY = b"".join(
    f'oauth_probe_success{{probe="documents",provider="cred-{i:05d}"}} 1.0\n'.encode()
    for i in range(20_000))


@pytest.mark.parametrize("engine", ["isal", "zlib"])
def test_each_engine_makes_gzip_that_any_client_reads(engine: str) -> None:
    packed = gzip_compress(BODY, engine)
    assert packed[:2] == b"\x1f\x8b"  # one gzip member, not a bare zlib stream
    assert gzip.decompress(packed) == BODY
    assert len(packed) < len(BODY) / 10


def test_isal_is_used_where_installed() -> None:
    # The test extra installs the speed extra: a scrape here runs what users
    # with `pip install token-health-exporter[speed]` run.
    assert GZIP_ENGINE == "isal"
    assert compression.gzip_compress(BODY) == gzip_compress(BODY, "isal")


def test_asking_for_isal_without_it_says_what_is_missing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compression, "isal_zlib", None)
    with pytest.raises(RuntimeError, match="speed extra"):
        gzip_compress(BODY, "isal")
    assert gzip.decompress(gzip_compress(BODY, "zlib")) == BODY
