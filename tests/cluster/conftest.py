"""Fixtures for tests with several `botfleet run` processes (see :mod:`tests.cluster.harness`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from fleet.config import DatabaseConfig
from fleet.emulator import EmulatorServer, EmulatorSettings
from tests.cluster.harness import Cluster, RedisServer

MakeCluster = Callable[[int], Cluster]


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def emulator_server() -> AsyncIterator[EmulatorServer]:
    async with EmulatorServer(settings=EmulatorSettings(seed=5)) as server:
        yield server


@pytest.fixture
async def make_cluster(
    tmp_path: Path,
    emulator_server: EmulatorServer,
    db_config: DatabaseConfig,
    redis_server: RedisServer,
) -> AsyncIterator[MakeCluster]:
    """``make_cluster(bots)``: instances are started by the test; all are killed after it."""
    assert db_config.url is not None
    made: list[Cluster] = []

    def make(bots: int) -> Cluster:
        cluster = Cluster(
            tmp_path,
            emulator_server.emulator,
            emulator_server.base_url,
            db_config.url.get_secret_value(),  # type: ignore[union-attr]
            redis_server,
            bots,
        )
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        await cluster.close()
