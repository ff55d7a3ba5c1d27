"""Group commit for payment webhooks: every request waits for its row to be committed.

A webhook is answered 2xx only once it is stored (gateways retry what we could
not store). Instead of one transaction per request, the requests that arrive
while a commit is in flight are stored together by the next one (one INSERT,
one COMMIT): under load, batches grow and the database does one round trip
for many webhooks; alone, a webhook is committed at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence

from storage.payments import PaymentInbox
from storage.repositories.payment_events import ReceivedWebhook

log = logging.getLogger(__name__)


class InboxWriter:
    def __init__(self, inbox: PaymentInbox, *, max_batch: int = 200) -> None:
        self._inbox = inbox
        self._max_batch = max_batch
        self._queue: list[tuple[ReceivedWebhook, asyncio.Future[bool]]] = []
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def store(self, webhook: ReceivedWebhook) -> bool:
        """True if new, False if this gateway event was stored before; raises if the
        database did not take it (the route answers 503 and the gateway retries)."""
        if self._closed:
            raise RuntimeError("inbox writer closed")
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.append((webhook, future))
        if self._task is None:
            self._task = asyncio.create_task(self._commit_loop(), name="payment-inbox")
        return await asyncio.shield(future)  # a caller that leaves does not undo the batch

    async def _commit_loop(self) -> None:
        try:
            while self._queue:
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                await self._commit(batch)
        finally:
            self._task = None

    async def _commit(self, batch: Sequence[tuple[ReceivedWebhook, asyncio.Future[bool]]]) -> None:
        webhooks = _unique(w for w, _ in batch)
        try:
            new = await self._inbox.store(webhooks)
        except Exception as exc:
            log.warning(
                "payment inbox: %s webhooks not stored (%s)", len(batch), type(exc).__name__
            )
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        claimed: set[tuple[str, str]] = set()
        for webhook, future in batch:
            key = (webhook.gateway_id, webhook.event_id)
            fresh = key in new and key not in claimed  # one "new" per event, even in a batch
            claimed.add(key)
            if not future.done():
                future.set_result(fresh)

    async def aclose(self) -> None:
        self._closed = True
        task = self._task
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)


def _unique(webhooks: Iterable[ReceivedWebhook]) -> list[ReceivedWebhook]:
    """One row per (gateway, event): an INSERT may not name a conflict twice."""
    seen: dict[tuple[str, str], ReceivedWebhook] = {}
    for webhook in webhooks:
        seen.setdefault((webhook.gateway_id, webhook.event_id), webhook)
    return list(seen.values())
