"""Builds the adapter of each configured gateway (``gateways[].kind`` -> its module)."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp

from fleet.config import GatewayConfig
from fleet.payments.base import Gateway
from fleet.payments.mercadopago import MercadoPago
from fleet.payments.pushinpay import PushinPay
from fleet.payments.sandbox import SandboxGateway

_KINDS: dict[str, Callable[[GatewayConfig, aiohttp.ClientSession], Gateway]] = {
    "sandbox": SandboxGateway,
    "mercadopago": MercadoPago,
    "pushinpay": PushinPay,
}


def build_gateway(config: GatewayConfig, session: aiohttp.ClientSession) -> Gateway:
    return _KINDS[config.kind](config, session)
