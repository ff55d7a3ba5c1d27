"""A lean HTTP/1.1 client for the Bot API: POST a JSON body, read the answer, keep the connection.

Every update costs one send, so the client's own cost counts: aiohttp's
``ClientSession`` spends ~80 µs of CPU per request (URL objects, header
multidicts, tracing hooks, timers), this spends a fraction, and an idle long
poll holds a protocol object and a socket instead of aiohttp's request,
response and connection objects. It does only what the Bot API needs: POST
with ``Content-Length``, answers with ``Content-Length`` or chunked, HTTP or
HTTPS to one host, keep-alive, a bounded pool.

It also knows what a caller must know about a failure: :class:`NotSent` when
not one byte of the request left (no connection in time, refused, closed
before the write), so sending again is safe; :class:`NoAnswer` when the
request left and no complete answer came, so whether Telegram acted is
unknown.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import cast
from urllib.parse import urlsplit


class HttpError(Exception):
    """A request did not get an answer."""


class NotSent(HttpError):
    """Nothing of the request reached the server."""


class NoAnswer(HttpError):
    """The request left; no complete answer came back."""


class Progress:
    """Set once a request's bytes are handed to the socket: from then on it may have left."""

    __slots__ = ("sent",)

    def __init__(self) -> None:
        self.sent = False


class _Connection(asyncio.Protocol):
    __slots__ = (
        "_body_until_close", "_buffer", "_close_after", "_head_end", "closed", "idle_since",
        "transport", "waiter",
    )  # fmt: skip

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed = False
        self.idle_since = 0.0
        self._buffer = bytearray()
        self._close_after = False
        self._body_until_close: int | None = None  # status of an answer ending at close
        self._head_end = -1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self.waiter is not None and not self.waiter.done():
            try:
                answer = self._parse()
            except ValueError as exc:
                self._fail(NoAnswer(f"bad answer: {exc}"))
                self.abort()
                return
            if answer is not None:
                self.waiter.set_result(answer)

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            if self._body_until_close is not None:
                self.waiter.set_result((self._body_until_close, bytes(self._rest())))
            else:
                self._fail(NoAnswer(type(exc).__name__ if exc else "connection closed"))

    @property
    def reusable(self) -> bool:
        return not self.closed and not self._close_after and not self._buffer

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, error: HttpError) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(error)

    def _rest(self) -> bytes:
        return bytes(self._buffer[self._head_end + 4 :])

    def _parse(self) -> tuple[int, bytes] | None:
        """The answer once complete (status, body); consumes it from the buffer."""
        buffer = self._buffer
        head_end = buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return None
        self._head_end = head_end
        lines = bytes(buffer[:head_end]).split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise ValueError("not an HTTP/1.x status line")
        status = int(parts[1])
        length: int | None = None
        chunked = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value.strip())
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                self._close_after = b"close" in value.lower()
        start = head_end + 4
        if chunked:
            return self._chunked(status, start)
        if length is None:
            self._body_until_close = status  # no length: the body ends when the server closes
            self._close_after = True
            return None
        if len(buffer) < start + length:
            return None
        body = bytes(buffer[start : start + length])
        del buffer[: start + length]
        return status, body

    def _chunked(self, status: int, start: int) -> tuple[int, bytes] | None:
        buffer = self._buffer
        body = bytearray()
        at = start
        while True:
            line_end = buffer.find(b"\r\n", at)
            if line_end < 0:
                return None
            size = int(bytes(buffer[at:line_end]).split(b";", 1)[0], 16)
            at = line_end + 2
            if size == 0:
                trailer_end = buffer.find(b"\r\n", at)
                if trailer_end < 0:
                    return None
                del buffer[: trailer_end + 2]
                return status, bytes(body)
            if len(buffer) < at + size + 2:
                return None
            body += buffer[at : at + size]
            at += size + 2


class HttpPool:
    """Keep-alive connections to the host of ``base_url``; ``limit`` 0: unbounded."""

    def __init__(
        self,
        base_url: str,
        *,
        limit: int = 100,
        connect_timeout: float = 10.0,
        idle_timeout: float = 30.0,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("base_url must be http(s)://host[:port][/path]")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl: ssl.SSLContext | None = (
            ssl.create_default_context() if parts.scheme == "https" else None
        )
        default = (parts.scheme == "https" and self._port == 443) or self._port == 80
        host = self._host if default else f"{self._host}:{self._port}"
        self._prefix = parts.path.rstrip("/").encode()
        self._host_line = b"Host: " + host.encode() + b"\r\n"
        self._head = self._host_line + b"Content-Type: application/json\r\n"
        self._limit = limit
        self._connect_timeout = connect_timeout
        self._idle_timeout = idle_timeout
        self._idle: deque[_Connection] = deque()
        self._open = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    @property
    def open_connections(self) -> int:
        return self._open

    async def post(
        self,
        path: str,
        body: bytes,
        *,
        read_timeout: float,
        progress: Progress | None = None,
        content_type: str | None = None,
    ) -> tuple[int, bytes]:
        """POST ``body`` to ``{base path}{path}``; (status, answer body).

        ``progress.sent`` tells a caller that is cancelled midway whether it left.
        ``content_type``: other than JSON (a multipart upload).
        """
        head = self._head
        if content_type is not None:
            head = self._host_line + b"Content-Type: " + content_type.encode() + b"\r\n"
        loop = asyncio.get_running_loop()
        connection = await self._acquire(loop)
        request = b"".join(
            (
                b"POST ", self._prefix, path.encode(), b" HTTP/1.1\r\n", head,
                b"Content-Length: ", str(len(body)).encode(), b"\r\n\r\n", body,
            )
        )  # fmt: skip
        waiter = connection.waiter = loop.create_future()
        transport = connection.transport
        if transport is None or connection.closed or transport.is_closing():
            self._discard(connection)
            raise NotSent("connection closed before the request")
        if progress is not None:
            progress.sent = True
        transport.write(request)
        handle = loop.call_later(read_timeout, _expire, waiter, read_timeout)
        try:
            answer: tuple[int, bytes] = await waiter
        except BaseException:
            connection.abort()  # half a conversation: this connection cannot be reused
            self._discard(connection)
            raise
        finally:
            handle.cancel()
            connection.waiter = None
        self._release(connection, loop)
        return answer

    async def _acquire(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        deadline = loop.time() + self._connect_timeout
        while True:
            if self._closed:
                raise NotSent("client closed")
            while self._idle:
                connection = self._idle.pop()  # the most recently used: least likely stale
                if connection.reusable and loop.time() - connection.idle_since < self._idle_timeout:
                    return connection
                self._discard(connection, abort=True)
            if not self._limit or self._open < self._limit:
                return await self._connect(loop, deadline)
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout(max(0.0, deadline - loop.time())):
                    await waiter
            except TimeoutError:
                raise NotSent("no connection free in time") from None
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    async def _connect(self, loop: asyncio.AbstractEventLoop, deadline: float) -> _Connection:
        self._open += 1
        try:
            async with asyncio.timeout(max(0.0, deadline - loop.time())):
                _, connection = await loop.create_connection(
                    _Connection,
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl else None,
                )
        except (OSError, TimeoutError, asyncio.CancelledError) as exc:
            self._open -= 1
            self._wake()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise NotSent(f"connect: {type(exc).__name__}") from None
        return connection

    def _release(self, connection: _Connection, loop: asyncio.AbstractEventLoop) -> None:
        if connection.reusable and not self._closed:
            connection.idle_since = loop.time()
            self._idle.append(connection)
            self._wake()
        else:
            self._discard(connection, abort=True)

    def _discard(self, connection: _Connection, *, abort: bool = False) -> None:
        if abort:
            connection.abort()
        self._open -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def aclose(self) -> None:
        self._closed = True
        while self._idle:
            self._discard(self._idle.pop(), abort=True)
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)


def _expire(waiter: asyncio.Future[tuple[int, bytes]], seconds: float) -> None:
    if not waiter.done():
        waiter.set_exception(NoAnswer(f"no answer within {seconds:g} s"))
