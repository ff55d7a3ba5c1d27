"""HTTP to a gateway's API, shared by the adapters: bearer token, the configured timeout,
answers mapped to :mod:`fleet.payments.base` errors, secrets scrubbed from every message."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import aiohttp

from fleet.config import GatewayConfig
from fleet.payments.base import ChargeNotFound, GatewayRefused, GatewayUnavailable

_RETRYABLE = frozenset({408, 409, 425, 429})  # and every 5xx: nothing decided, try later
_BEARER = re.compile(r"Bearer\s+\S+", re.IGNORECASE)


class GatewayClient:
    """HTTP to one gateway's API, shared by the adapters: bearer token, the configured
    timeout, answers mapped to :mod:`fleet.payments.base` errors, secrets scrubbed from
    every message (no exception chains: a cause could carry request details)."""

    def __init__(self, config: GatewayConfig, session: aiohttp.ClientSession) -> None:
        if config.base_url is None or config.access_token is None:
            raise ValueError(f"gateway {config.id}: api_base and access_token required")
        self.base = config.base_url.rstrip("/")
        self._config = config
        self._session = session  # shared: never closed here

    async def call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        found: bool = False,
    ) -> bytes:
        """The body of a 2xx answer; ``found``: a 404 is :class:`ChargeNotFound`."""
        gateway, config = self._config.id, self._config
        assert config.access_token is not None
        sent = {"Authorization": f"Bearer {config.access_token.get_secret_value()}"}
        sent["Accept"] = "application/json"
        if body is not None:
            sent["Content-Type"] = "application/json"
        sent.update(headers or {})
        try:
            async with (
                asyncio.timeout(config.timeout),
                self._session.request(
                    method,
                    self.base + path,
                    data=body,
                    headers=sent,
                    allow_redirects=False,
                    raise_for_status=False,
                ) as response,
            ):
                status, raw = response.status, await response.read()
        except TimeoutError:
            raise GatewayUnavailable(f"{gateway}: no answer in {config.timeout:g} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise GatewayUnavailable(
                self.scrub(f"{gateway}: {type(exc).__name__}: {exc}")
            ) from None
        if 200 <= status < 300:
            return raw
        if found and status == 404:
            raise ChargeNotFound(f"{gateway}: no such charge")
        if status >= 500 or status in _RETRYABLE:
            raise GatewayUnavailable(f"{gateway}: HTTP {status}")
        raise GatewayRefused(self.scrub(f"{gateway}: HTTP {status}: {_message(raw)}"))

    def json(self, raw: bytes) -> Any:
        try:
            return json.loads(raw, parse_float=Decimal)  # amounts stay exact
        except (ValueError, RecursionError):
            raise GatewayUnavailable(f"{self._config.id}: malformed answer") from None

    def object(self, raw: bytes) -> dict[str, Any]:
        data = self.json(raw)
        if not isinstance(data, dict):
            raise GatewayUnavailable(f"{self._config.id}: malformed answer")
        return data

    def scrub(self, text: str) -> str:
        for secret in (self._config.access_token, self._config.webhook_secret):
            if secret is not None and secret.get_secret_value():
                text = text.replace(secret.get_secret_value(), "***")
        return _BEARER.sub("Bearer ***", text)[:300]


def _message(raw: bytes) -> str:
    """What the gateway said about a refusal (``message``, causes, field errors)."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return raw[:200].decode("utf-8", "replace")
    if not isinstance(data, dict):
        return str(data)[:200]
    parts = [str(data.get("message") or data.get("error") or "")]
    for cause in data.get("cause") or []:
        if isinstance(cause, dict) and cause.get("description"):
            parts.append(str(cause["description"]))
    errors = data.get("errors")
    if isinstance(errors, dict):
        parts.extend(str(v[0] if isinstance(v, list) and v else v) for v in errors.values())
    return "; ".join(p for p in parts if p)[:200]


class ApiGateway:
    """What the adapters over a gateway's HTTP API share: the account's config, a client
    on the shared session (its owner closes it), the id, a repr without credentials."""

    def __init__(self, config: GatewayConfig, session: aiohttp.ClientSession) -> None:
        self._config = config
        self._client = GatewayClient(config, session)

    @property
    def id(self) -> str:
        return self._config.id

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r}, base={self._client.base!r})"

    async def aclose(self) -> None:
        return None  # the session is shared: its owner closes it
