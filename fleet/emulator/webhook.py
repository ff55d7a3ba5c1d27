"""Webhook delivery: POST each update, in order per chat, retried with back-off.

A failing delivery holds only its own chat's queue; other chats go on, up to
``max_connections`` requests at once. An update leaves the queue on a 2xx.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson

from fleet.emulator.bots import EmulatedBot, WebhookConfig
from fleet.emulator.updates import PendingUpdate

logger = logging.getLogger(__name__)

ReplyExecutor = Callable[[EmulatedBot, dict[str, Any]], Awaitable[None]]


class WebhookDelivery:
    def __init__(
        self,
        bot: EmulatedBot,
        config: WebhookConfig,
        session: aiohttp.ClientSession,
        execute_reply: ReplyExecutor,
        on_change: Callable[[], None],
    ) -> None:
        self._bot = bot
        self._config = config
        self._session = session
        self._execute_reply = execute_reply
        self._on_change = on_change
        self._settings = bot.settings
        self._chats: dict[int, deque[PendingUpdate]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(config.max_connections)
        self.delivered = 0
        self.failed = 0

    def start(self) -> None:
        self._bot.queue.add_listener(self._on_update)
        for entry in self._bot.queue.pending():
            self._on_update(entry)

    async def stop(self) -> None:
        self._bot.queue.remove_listener(self._on_update)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._chats.clear()

    def _on_update(self, entry: PendingUpdate) -> None:
        chat = self._chats.get(entry.chat_id)
        if chat is not None:
            chat.append(entry)
            return
        self._chats[entry.chat_id] = deque([entry])
        task = asyncio.get_running_loop().create_task(
            self._deliver_chat(entry.chat_id), name=f"webhook:{self._bot.id}:{entry.chat_id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver_chat(self, chat_id: int) -> None:
        pending = self._chats[chat_id]
        backoff = self._settings.webhook_backoff_initial
        try:
            while pending:
                entry = pending[0]
                if entry.update_id not in self._bot.queue:
                    pending.popleft()  # confirmed, dropped or expired meanwhile
                    continue
                if await self._post(entry):
                    pending.popleft()
                    self._bot.queue.remove(entry.update_id)
                    self._bot.fetched([entry.update_id], [entry.chat_id])
                    self.delivered += 1
                    backoff = self._settings.webhook_backoff_initial
                    self._on_change()
                    continue
                self.failed += 1
                # Telegram's retry timer for this chat; nothing waits on it but this chat.
                await asyncio.sleep(backoff)
                backoff = min(
                    backoff * self._settings.webhook_backoff_factor,
                    self._settings.webhook_backoff_max,
                )
        finally:
            if self._chats.get(chat_id) is pending:
                del self._chats[chat_id]

    async def _post(self, entry: PendingUpdate) -> bool:
        headers = {"Content-Type": "application/json"}
        if self._config.secret_token:
            headers["X-Telegram-Bot-Api-Secret-Token"] = self._config.secret_token
        timeout = aiohttp.ClientTimeout(total=self._settings.webhook_timeout)
        async with self._slots:
            try:
                async with self._session.post(
                    self._config.url, data=entry.encoded, headers=headers, timeout=timeout
                ) as response:
                    body = await response.read()
                    status = response.status
                    reason = response.reason or ""
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                self._failed(f"Connection failed: {type(exc).__name__}")
                return False
        if not 200 <= status < 300:
            self._failed(f"Wrong response from the webhook: {status} {reason}".rstrip())
            return False
        await self._reply(body)
        return True

    async def _reply(self, body: bytes) -> None:
        """A webhook may answer with a method call; Telegram runs it and ignores its result."""
        if not body:
            return
        try:
            reply = orjson.loads(body)
        except orjson.JSONDecodeError:
            return
        if isinstance(reply, dict) and isinstance(reply.get("method"), str):
            await self._execute_reply(self._bot, reply)

    def _failed(self, message: str) -> None:
        self._config.last_error_date = int(time.time())
        self._config.last_error_message = message
        logger.debug("webhook delivery for bot %s failed: %s", self._bot.id, message)
