"""The emulator over HTTP: ``/bot{token}/{method}`` plus the control API, and its lifecycle.

:class:`EmulatorServer` keeps the emulator's state across :meth:`restart`, so a
client sees refused connections while it is down and the same bots after.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
from typing import Any

import orjson
from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from fleet.emulator.control import add_control_routes
from fleet.emulator.emulator import TelegramEmulator
from fleet.emulator.errors import ApiError, DropConnection, bad_request, not_found
from fleet.emulator.params import Params, Upload
from fleet.emulator.pix import add_pix_routes
from fleet.emulator.settings import EmulatorSettings

logger = logging.getLogger(__name__)

EMULATOR_KEY = web.AppKey("emulator", TelegramEmulator)
_JSON = "application/json"


async def read_params(request: web.Request, max_upload: int) -> Params:
    """Query string, then the body: JSON, url-encoded form or multipart with files."""
    raw: dict[str, Any] = dict(request.query)
    files: dict[str, Upload] = {}
    ctype = request.content_type
    if not request.body_exists:
        return Params(raw)
    if ctype == "multipart/form-data":
        try:
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader) or not part.name:
                    continue
                if part.filename is not None:
                    files[part.name] = await _read_upload(part, max_upload)
                else:
                    raw[part.name] = await part.text()
        except (ValueError, AssertionError, UnicodeDecodeError, HttpProcessingError) as exc:
            raise bad_request(f"can't parse multipart body: {type(exc).__name__}") from None
        return Params(raw, files)
    if ctype == "application/x-www-form-urlencoded":
        try:
            form = await request.post()
        except (ValueError, UnicodeDecodeError):
            raise bad_request("can't parse form body") from None
        raw.update({key: value for key, value in form.items() if isinstance(value, str)})
        return Params(raw)
    body = await request.read()
    if not body.strip():
        return Params(raw)
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise bad_request("can't parse JSON object") from None
    if not isinstance(decoded, dict):
        raise bad_request("JSON body must be an object")
    raw.update(decoded)
    return Params(raw)


async def _read_upload(part: BodyPartReader, max_upload: int) -> Upload:
    digest = hashlib.sha256()
    size = 0
    while chunk := await part.read_chunk(64 * 1024):
        size += len(chunk)
        if size > max_upload:
            raise ApiError(413, "Request Entity Too Large")
        digest.update(chunk)
    return Upload(
        filename=part.filename or "file",
        content_type=part.headers.get("Content-Type", "application/octet-stream"),
        size=size,
        digest=digest.hexdigest(),
    )


async def _bot_method(request: web.Request) -> web.StreamResponse:
    emulator = request.app[EMULATOR_KEY]
    token, method = request.match_info["token"], request.match_info["method"]
    try:
        params = await read_params(request, emulator.settings.max_upload_bytes)
    except ApiError as error:
        emulator.statuses[error.code] += 1
        return _envelope(error.code, orjson.dumps(error.envelope()))
    try:
        status, body = await emulator.respond(token, method, params)
    except DropConnection:
        # Close without an answer: the client cannot know whether the method ran.
        transport = request.transport
        if transport is not None:
            transport.abort()
        raise asyncio.CancelledError from None
    except Exception:
        # A bug here must not kill the server; the fuzz tests fail on any 500.
        logger.exception("emulator failed on %s", method)
        emulator.statuses[500] += 1
        return _envelope(500, orjson.dumps(ApiError(500, "Internal Server Error").envelope()))
    return _envelope(status, body)


async def _not_found(request: web.Request) -> web.StreamResponse:
    return _envelope(404, orjson.dumps(not_found().envelope()))


def _envelope(status: int, body: bytes) -> web.Response:
    return web.Response(status=status, body=body, content_type=_JSON)


def build_app(emulator: TelegramEmulator) -> web.Application:
    app = web.Application(client_max_size=emulator.settings.max_upload_bytes + 1024 * 1024)
    app[EMULATOR_KEY] = emulator
    app.router.add_route("*", "/bot{token}/{method}", _bot_method)
    add_control_routes(app, emulator)
    add_pix_routes(app, emulator.pix)
    app.router.add_route("*", "/{tail:.*}", _not_found)
    return app


class EmulatorServer:
    """Serves one emulator on host:port (port 0 picks a free one, kept across restarts)."""

    def __init__(
        self,
        emulator: TelegramEmulator | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        settings: EmulatorSettings | None = None,
    ) -> None:
        self.emulator = emulator or TelegramEmulator(settings)
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self) -> None:
        if self._runner is not None:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        # Handlers are cancelled when their client goes away: long polls must not pile up.
        runner = web.AppRunner(
            build_app(self.emulator),
            handler_cancellation=True,
            access_log=None,
            shutdown_timeout=0.5,
        )
        await runner.setup()
        site = web.SockSite(runner, sock, backlog=4096)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.emulator.pix.start()

    async def stop(self) -> None:
        """Close the listening socket and every open connection; state stays."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await self.emulator.pix.stop()  # its webhook deliveries end with the server
            await runner.shutdown()
            await runner.cleanup()

    async def restart(self, down_for: float = 0.0) -> None:
        """Go away for ``down_for`` seconds (clients get refused connections), then come back."""
        await self.stop()
        if down_for > 0:
            await asyncio.sleep(down_for)  # the outage itself is what is simulated
        await self.start()

    async def close(self) -> None:
        await self.stop()
        await self.emulator.close()

    async def __aenter__(self) -> EmulatorServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
