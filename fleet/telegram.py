"""The Telegram wire: one POST to ``{api_base}/bot{token}/{method}`` and what its answer means.

The poll loop, webhook set-up and the sender all go through :func:`call` (over
``fleet.http``), so a status code means the same everywhere: 401 :class:`Unauthorized`, 409
:class:`Conflict`, 429 :class:`RetryAfter`, 403 :class:`Blocked`, other 4xx
:class:`Refused`, 5xx :class:`ServerError`, and a connection problem
:class:`NetworkError` that says whether the request may have reached
Telegram. Only the method name and the status ever appear in an error: the
URL carries the bot token.
"""

from __future__ import annotations

import secrets
from typing import Any

import orjson

from fleet.errors import FleetError
from fleet.http import HttpPool, NoAnswer, NotSent, Progress


class TelegramError(FleetError):
    """Telegram answered with an error, or could not be reached."""

    kind = "error"

    def __init__(self, method: str, description: str) -> None:
        super().__init__(f"{method}: {description}")
        self.method = method
        self.description = description


class Unauthorized(TelegramError):
    kind = "unauthorized"  # 401: the token is revoked or wrong


class Conflict(TelegramError):
    kind = "conflict"  # 409: another getUpdates poller, or a webhook is set


class RetryAfter(TelegramError):
    kind = "retry_after"  # 429: Telegram did not act on it; wait, then again

    def __init__(self, method: str, description: str, retry_after: float) -> None:
        super().__init__(method, description)
        self.retry_after = retry_after


class Blocked(TelegramError):
    kind = "blocked"  # 403: the user blocked the bot or is gone


class Refused(TelegramError):
    kind = "client"  # other 4xx: Telegram will never accept this request


class ServerError(TelegramError):
    kind = "server"  # 5xx: Telegram did not act on it; try again later


class Malformed(TelegramError):
    kind = "malformed"  # an answer that is not the Bot API envelope


class NetworkError(TelegramError):
    """No answer. ``sent`` False: surely nothing reached Telegram (safe to send again)."""

    kind = "network"

    def __init__(self, method: str, description: str, *, sent: bool) -> None:
        super().__init__(method, description)
        self.sent = sent


def method_path(token: str, method: str) -> str:
    """The request path below the API base (it carries the token: never logged)."""
    return f"/bot{token}/{method}"


async def call(
    client: HttpPool,
    path: str,
    method: str,
    body: bytes,
    read_timeout: float,
    progress: Progress | None = None,
    content_type: str | None = None,
) -> Any:
    """POST one request; the ``result`` of a successful answer, or a :class:`TelegramError`."""
    try:
        status, raw = await client.post(
            path, body, read_timeout=read_timeout, progress=progress, content_type=content_type
        )
    except NotSent as exc:
        # Refused, no connection in time, closed before the write: not one byte went out.
        raise NetworkError(method, str(exc), sent=False) from None
    except NoAnswer as exc:
        # The request left: whether Telegram acted on it is unknown.
        raise NetworkError(method, str(exc), sent=True) from None
    return decode(method, status, raw)


def multipart(
    fields: dict[str, Any], files: dict[str, tuple[str, bytes, str]]
) -> tuple[bytes, str]:
    """A multipart/form-data body (fields as Telegram reads them: JSON for objects) and its
    content type. ``files``: field -> (file name, bytes, MIME type)."""
    boundary = secrets.token_hex(16)
    parts: list[bytes] = []
    for name, value in fields.items():
        text = value if isinstance(value, str) else orjson.dumps(value).decode()
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            + text.encode()
            + b"\r\n"
        )
    for name, (filename, data, mime) in files.items():
        parts.append(
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}";'
                f' filename="{filename}"\r\nContent-Type: {mime}\r\n\r\n'
            ).encode()
            + data
            + b"\r\n"
        )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def decode(method: str, status: int, raw: bytes) -> Any:
    try:
        answer = orjson.loads(raw)
    except orjson.JSONDecodeError:
        answer = None
    if status == 200 and isinstance(answer, dict) and answer.get("ok") is True:
        return answer.get("result")
    if not isinstance(answer, dict):
        if status >= 500:
            raise ServerError(method, f"HTTP {status}")
        raise Malformed(method, f"HTTP {status}, not a Bot API answer")
    description = str(answer.get("description") or f"HTTP {status}")
    if status == 429:
        parameters = answer.get("parameters")
        retry = parameters.get("retry_after", 1) if isinstance(parameters, dict) else 1
        raise RetryAfter(method, description, float(retry) if _number(retry) else 1.0)
    if status >= 500:
        raise ServerError(method, description)
    error = _BY_STATUS.get(status, Refused)
    raise error(method, description)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


_BY_STATUS: dict[int, type[TelegramError]] = {401: Unauthorized, 403: Blocked, 409: Conflict}
