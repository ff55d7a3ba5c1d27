"""The fleet end to end: a Supervisor on real Postgres and Redis; the emulator plays Telegram."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import make_url

from fleet.config import DatabaseConfig, FleetConfig, RedisConfig
from fleet.emulator import EmulatorServer, EmulatorSettings, TelegramEmulator, User
from fleet.supervisor import Supervisor
from tests.faultproxy import FaultProxy
from tests.services import free_port

WELCOME = "Bem-vindo! Escolha um plano abaixo."
FALLBACK = "Não entendi. Envie /start para ver os planos."


WEBHOOK_SECRET = "e2e-instance-webhook-secret-0123456789"
MODES = pytest.mark.parametrize("mode", ["polling", "webhook"])


def token_for(index: int) -> str:
    return f"{8_000_000_000 + index}:e2e-token-{index:04d}-abcdefghijk"


def fleet_dict(
    base_url: str,
    db: DatabaseConfig,
    redis: RedisConfig,
    bots: int,
    *,
    welcome: str = WELCOME,
    mode: str = "polling",
    **runtime: Any,
) -> dict[str, Any]:
    assert db.url is not None and redis.url is not None
    http: dict[str, Any] = {"host": "127.0.0.1", "port": 0}
    telegram: dict[str, Any] = {"api_base": base_url, "polling_timeout": 2}
    if mode == "webhook":
        # Telegram (the emulator) must know the URL before we start: a fixed free port.
        http["port"] = free_port()
        http["public_url"] = f"http://127.0.0.1:{http['port']}"
        telegram |= {"mode": "webhook", "webhook_secret": WEBHOOK_SECRET}
    return {
        "instance": {"id": "e2e-1"},
        "redis": {"url": redis.url.get_secret_value(), "key_prefix": redis.key_prefix},
        "database": {"url": db.url.get_secret_value()},
        "http": http,
        "telegram": telegram,
        "runtime": {"shutdown_grace": 5, "shutdown_deadline": 10, "config_poll_interval": 0.2}
        | runtime,
        # Short leases: a test that kills a fleet gets its bots back within seconds.
        "leases": {"ttl": 5, "renew_deadline": 4, "retry_period": 0.5, "takeover_grace": 1},
        "funnels": {
            "main": {"welcome": {"text": welcome}, "fallback": {"text": FALLBACK}},
        },
        "bots": [
            {"id": f"bot-{i:03d}", "token": token_for(i), "funnel": "main"} for i in range(bots)
        ],
    }


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture
async def emulator_server() -> AsyncIterator[EmulatorServer]:
    async with EmulatorServer(settings=EmulatorSettings(seed=11)) as server:
        yield server


@pytest.fixture
def emulator(emulator_server: EmulatorServer) -> TelegramEmulator:
    return emulator_server.emulator


class FleetHandle:
    def __init__(self, supervisor: Supervisor, task: asyncio.Task[None]) -> None:
        self.supervisor = supervisor
        self.task = task

    async def stop(self, within: float = 30) -> None:
        self.supervisor.request_stop()
        async with asyncio.timeout(within):
            await self.task


StartFleet = Callable[..., Any]


@pytest.fixture
async def start_fleet(
    emulator_server: EmulatorServer,
    db_config: DatabaseConfig,
    redis_config: RedisConfig,
    tmp_path: Path,
) -> AsyncIterator[StartFleet]:
    """``await start_fleet(bots=N)``: a running Supervisor over a config file in tmp_path."""
    handles: list[FleetHandle] = []

    async def start(
        bots: int = 3, data: dict[str, Any] | None = None, **runtime: Any
    ) -> FleetHandle:
        data = data or fleet_dict(
            emulator_server.base_url, db_config, redis_config, bots, **runtime
        )
        for bot in data["bots"]:
            emulator_server.emulator.add_bot(bot["token"])
        path = write_config(tmp_path / "config.yaml", data)
        supervisor = Supervisor(FleetConfig.model_validate(data), config_path=path)
        task = asyncio.create_task(supervisor.run())
        ready = asyncio.create_task(supervisor.wait_ready())
        done, _ = await asyncio.wait({task, ready}, timeout=60, return_when="FIRST_COMPLETED")
        if ready not in done:
            ready.cancel()
            if task.done():
                task.result()  # raise the start-up error
            raise TimeoutError("fleet did not become ready")
        handle = FleetHandle(supervisor, task)
        handles.append(handle)
        return handle

    yield start
    for handle in handles:
        if not handle.task.done():
            handle.supervisor.request_stop()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(30):
                    await handle.task


def welcomes(emulator: TelegramEmulator, token: str, user: User, text: str = WELCOME) -> int:
    return sum(1 for sent in emulator.transcript(token, user) if sent.text == text)


def metric(supervisor: Supervisor, name: str, **labels: str) -> float:
    value = supervisor.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


@pytest.fixture
async def pg_proxy(db_config: DatabaseConfig) -> AsyncIterator[FaultProxy]:
    """A fault proxy in front of the test PostgreSQL (point a fleet at it with :func:`through`)."""
    assert db_config.url is not None
    url = make_url(db_config.url.get_secret_value())
    if not url.host or url.host.startswith("/"):
        pytest.skip("the test PostgreSQL is not on TCP")
    async with FaultProxy(url.host, url.port or 5432) as proxy:
        yield proxy


def through(proxy: FaultProxy, db: DatabaseConfig) -> str:
    assert db.url is not None
    url = make_url(db.url.get_secret_value()).set(host=proxy.host, port=proxy.port)
    return url.render_as_string(hide_password=False)
