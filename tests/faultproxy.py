"""A TCP fault proxy: break real Redis / PostgreSQL connections at a chosen moment.

Sits between a client and a real server and forwards bytes both ways until told
otherwise:

- :meth:`FaultProxy.cut` resets every open connection (RST) and resets new ones
  right after accepting them, until :meth:`FaultProxy.restore`;
- :meth:`FaultProxy.freeze` keeps connections open but forwards nothing, in
  either direction, EOF included (a hung server or a silent network); new
  connections are accepted and hang too;
- :meth:`FaultProxy.restore` forwards again; bytes held back by a freeze are
  delivered then, in order (so a request the client gave up on may still
  reach the server); connections that were cut stay dead.

Stdlib only.  Every task it starts is tracked and cancelled by :meth:`stop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from types import TracebackType
from typing import Literal, Self

State = Literal["open", "cut", "frozen"]

_CHUNK = 64 * 1024


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close at once with an RST (SO_LINGER 0), dropping anything unsent; idempotent."""
    transport = writer.transport
    sock = transport.get_extra_info("socket")
    if sock is not None and not transport.is_closing():  # once closing, the fd may be gone
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()  # a no-op once the transport has closed


class _Link:
    """One client connection and, once connected, its upstream twin."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None

    def reset(self) -> None:
        _reset(self.client)
        if self.upstream is not None:
            _reset(self.upstream)


class FaultProxy:
    def __init__(
        self, target_host: str, target_port: int, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.host = host
        self._wanted_port = port
        self._server: asyncio.Server | None = None
        self._port: int | None = None
        self._state: State = "open"
        self._flowing = asyncio.Event()  # set unless frozen
        self._flowing.set()
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        if self._server is not None or self._closed:
            raise RuntimeError("FaultProxy.start() may be called once")
        self._server = await asyncio.start_server(self._accept, self.host, self._wanted_port)
        self._port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Close the listener and reset every connection; return when all tasks are done."""
        self._closed = True
        self._flowing.set()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for link in self._links:
            link.reset()
        self._links.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- addressing and state --------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FaultProxy is not started")
        return self._port

    def url(self, scheme: str, path: str = "") -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}{path}"

    @property
    def connections(self) -> int:
        """Client connections accepted and not yet closed by the proxy."""
        return len(self._links)

    @property
    def state(self) -> State:
        return self._state

    def cut(self) -> None:
        """Reset every open connection; reset new ones as soon as accepted."""
        self._state = "cut"
        self._flowing.set()  # nothing is held back for a dead connection
        for link in self._links:
            link.reset()
            if link.task is not None:
                link.task.cancel()  # its clean-up runs later; it stays in _tasks until then
        self._links.clear()

    def freeze(self) -> None:
        """Forward nothing either way (EOF included) until :meth:`restore`."""
        self._state = "frozen"
        self._flowing.clear()

    def restore(self) -> None:
        """Forward normally again; deliver what a freeze held back."""
        self._state = "open"
        self._flowing.set()

    # -- forwarding ------------------------------------------------------------

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A plain callback (not a coroutine) so that asyncio creates no task of its own.
        if self._closed or self._state == "cut":
            _reset(writer)
            return
        link = _Link(writer)
        self._links.add(link)
        link.task = asyncio.get_running_loop().create_task(self._serve(link, reader))
        self._tasks.add(link.task)
        link.task.add_done_callback(self._tasks.discard)

    async def _serve(self, link: _Link, client_reader: asyncio.StreamReader) -> None:
        clean = False
        try:
            up_reader, link.upstream = await asyncio.open_connection(
                self.target_host, self.target_port, limit=_CHUNK
            )
            async with asyncio.TaskGroup() as group:
                group.create_task(self._pump(client_reader, link.upstream))
                group.create_task(self._pump(up_reader, link.client))
            clean = True
        except* OSError:
            pass  # refused upstream, or a reset on either side: reset the other side too
        finally:
            self._links.discard(link)
            writers = [w for w in (link.client, link.upstream) if w is not None]
            for writer in writers:
                if clean:
                    writer.close()  # both directions saw EOF and everything was drained
                else:
                    _reset(writer)
            try:
                for writer in writers:  # the sockets are closed one loop turn later
                    with contextlib.suppress(Exception):
                        await writer.wait_closed()
            finally:
                for writer in writers:  # cancelled while a peer would not read: drop it
                    _reset(writer)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            data = await reader.read(_CHUNK)
            await self._flowing.wait()  # a freeze holds this chunk (or the EOF) back
            if not data:
                if writer.can_write_eof() and not writer.transport.is_closing():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()  # back-pressure: the reader pauses while this side is full
