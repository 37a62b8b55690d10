"""Bytes in and out of one connection, in plain text or through TLS.

TLS runs through ``ssl.SSLObject`` over memory BIOs on the connection's plain
stream, rather than through ``loop.start_tls()`` or ``start_server(ssl=...)``,
for two reasons:

- asyncio drops the alert OpenSSL writes when a handshake fails, so a client
  refused for a missing or untrusted certificate (or a cipher or version we do
  not allow) sees the connection cut with no reason. Here the alert is sent
  before the connection closes, as Go's and OpenSSL's own servers do, and
  curl or Prometheus report "certificate required" instead of an EOF.
- Each connection takes the ``SSLContext`` in force when it opens, so a
  certificate renewed in the web config is served from the next connection on.

OpenSSL does all the cryptography; this module only moves its bytes. Records
are encrypted on the event loop, as asyncio's own TLS transport does.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

#: Bytes read from the socket at a time.
READ_CHUNK = 64 * 1024
#: Plain text handed to OpenSSL at a time, so a large response is not held twice
#: (plain and encrypted) in full.
_WRITE_CHUNK = 256 * 1024


class PlainStream:
    """A connection's bytes as they come: the TLS-free case of ``TLSStream``."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @property
    def transport(self) -> asyncio.WriteTransport:
        # No isinstance check: uvloop's transports have every method of
        # asyncio.WriteTransport without deriving from it.
        return self.writer.transport

    async def read(self, n: int) -> bytes:
        """Up to ``n`` bytes; b"" once the client has closed."""
        return await self.reader.read(n)

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    async def drain(self) -> None:
        await self.writer.drain()

    def close(self) -> None:
        """Close after what was written has gone out."""
        self.writer.close()

    def abort(self) -> None:
        """Close now, dropping anything unsent."""
        self.transport.abort()
        self.writer.close()


class TLSStream(PlainStream):
    """A server-side TLS session over a plain stream: ``await handshake()`` first."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 context: ssl.SSLContext) -> None:
        super().__init__(reader, writer)
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._eof = False

    def _flush(self) -> None:
        if self._outgoing.pending:
            self.writer.write(self._outgoing.read())

    async def _receive(self) -> bool:
        """Feed OpenSSL the next bytes from the socket; False at end of stream."""
        data = await self.reader.read(READ_CHUNK)
        if data:
            self._incoming.write(data)
            return True
        self._incoming.write_eof()
        self._eof = True
        return False

    async def handshake(self) -> None:
        """Complete the handshake; ssl.SSLError (after sending its alert) or OSError if not.

        The caller bounds it with a timeout.
        """
        while True:
            try:
                self._ssl.do_handshake()
            except ssl.SSLWantReadError:
                self._flush()
                if not await self._receive():
                    raise ConnectionResetError("client closed during the TLS handshake") from None
            except ssl.SSLError:
                # OpenSSL has written an alert saying why; let the client have it.
                self._flush()
                raise
            else:
                self._flush()
                return

    async def read(self, n: int) -> bytes:
        while True:
            try:
                return self._ssl.read(n)
            except ssl.SSLWantReadError:
                self._flush()  # e.g. a TLS 1.3 key update answer
                if self._eof:
                    return b""
                await self._receive()  # at the end of stream OpenSSL then says so itself
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""  # close_notify, or a client that just hung up

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        for start in range(0, len(view), _WRITE_CHUNK):
            self._ssl.write(view[start:start + _WRITE_CHUNK])
            self._flush()

    def close(self) -> None:
        # Writes close_notify; the client's own is not awaited.
        with contextlib.suppress(ssl.SSLError, ValueError):
            self._ssl.unwrap()
        self._flush()
        self.writer.close()
