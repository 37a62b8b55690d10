"""gzip for the web server's answers (``Content-Encoding: gzip``).

ISA-L's deflate (the ``isal`` package, in the ``speed`` extra) where it is
installed, else zlib's. Both make standard gzip that any client reads, and
both let go of the GIL while they compress, so the event loop runs meanwhile.

Measured on the 2.1 MB ``/metrics`` body of 1,000 credentials
(``python -m benchmarks.scrape`` prints the figures of the machine it runs on):
zlib at level 1 takes ~7 ms of CPU for 204 KB, zlib's default level 6 ~23 ms
for 164 KB (3x the time to save 40 KB, which a LAN carries in well under a
millisecond); ISA-L at its level 1 takes a fifth of zlib's level-1 time
(0.8 ms against 4.0 ms on the same body, in one measurement) for a body about
as small. ISA-L's levels 0-2 cost the same, level 0 compresses less, level 3
costs ten times as much. With zlib a scrape spent about a third of its time
in gzip.
"""

from __future__ import annotations

import zlib
from types import ModuleType

__all__ = ["GZIP_ENGINE", "gzip_compress"]

#: zlib's level for /metrics, chosen by measurement (above).
ZLIB_LEVEL = 1
#: ISA-L's level (0-3), chosen by measurement (above).
ISAL_LEVEL = 1

isal_zlib: ModuleType | None
try:
    from isal import isal_zlib
except ImportError:  # the speed extra is not installed
    isal_zlib = None

#: The deflate in use: ``isal`` where installed, else ``zlib``.
GZIP_ENGINE = "zlib" if isal_zlib is None else "isal"


def gzip_compress(data: bytes, engine: str = GZIP_ENGINE) -> bytes:
    """``data`` as one gzip member, with ``engine`` (tests pick either)."""
    if engine == "isal":
        if isal_zlib is None:
            raise RuntimeError("the isal package (the speed extra) is not installed")
        compressed: bytes = isal_zlib.compress(data, ISAL_LEVEL, wbits=31)
        return compressed
    return zlib.compress(data, ZLIB_LEVEL, wbits=31)
