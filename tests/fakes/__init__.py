"""Local fake gateway APIs: aiohttp apps on loopback answering payloads shaped like the
documented ones, with knobs for tests.

Every fake records the requests it received (:attr:`FakeGateway.requests`) and takes
faults for its next calls (:meth:`FakeGateway.fail_next`): an HTTP status (``"500"``,
``"429"``, ``"401"``, ``"422"``...), ``"timeout"`` (the request is held, never answered,
until the client goes away or the fake closes) or ``"malformed"`` (200 with a body that
is not JSON). ``after=True`` applies the fault once the request was handled: the gateway
did the work and the answer was lost.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

FAULTS = frozenset({"timeout", "malformed"})


@dataclass(frozen=True, slots=True)
class Recorded:
    """One request as the fake received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(slots=True)
class _Fault:
    kind: str
    method: str | None
    after: bool


class FakeGateway:
    """Base of the fakes: a server on 127.0.0.1 (a free port), the request log, the faults."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.requests: list[Recorded] = []
        self._faults: list[_Fault] = []
        self._release = asyncio.Event()  # frees held ("timeout") requests at close
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- to be provided by each fake ------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    def error_body(self, status: int, request: web.Request) -> dict[str, Any]:
        return {"message": f"error {status}"}

    # -- knobs ----------------------------------------------------------------------------

    def fail_next(
        self, kind: str, times: int = 1, *, method: str | None = None, after: bool = False
    ) -> None:
        """The next ``times`` calls (of ``method`` only, if given) fail with ``kind``."""
        if kind not in FAULTS and not (kind.isdigit() and 400 <= int(kind) <= 599):
            raise ValueError(f"unknown fault {kind!r}")
        for _ in range(times):
            self._faults.append(_Fault(kind, method.upper() if method else None, after))

    def clear_faults(self) -> None:
        self._faults.clear()

    def calls(self, method: str, path_prefix: str = "") -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path.startswith(path_prefix)]

    def authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.token}"

    # -- server ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        app.add_routes(self.routes())
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = int(sock.getsockname()[1])
        runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None, shutdown_timeout=0.5
        )
        await runner.setup()
        try:
            await web.SockSite(runner, sock).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner

    async def close(self) -> None:
        self._release.set()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(
            Recorded(
                method=request.method,
                path=request.path,
                query=dict(request.query),
                headers={k.lower(): v for k, v in request.headers.items()},
                body=body,
            )
        )
        fault = self._take_fault(request.method)
        if fault is None:
            return await handler(request)
        if fault.after:
            await handler(request)
        return await self._fail(fault.kind, request)

    def _take_fault(self, method: str) -> _Fault | None:
        for index, fault in enumerate(self._faults):
            if fault.method is None or fault.method == method:
                return self._faults.pop(index)
        return None

    async def _fail(self, kind: str, request: web.Request) -> web.StreamResponse:
        if kind == "timeout":
            await self._release.wait()  # cancelled when the client gives up
            return web.Response(status=504)
        if kind == "malformed":
            return web.Response(text="<html>upstream error</html>", content_type="text/html")
        status = int(kind)
        return web.json_response(self.error_body(status, request), status=status)
