"""Repositories: queries over one session. They never commit; services do."""

from storage.repositories.bots import BotRecord, BotRepository
from storage.repositories.dead_letters import DeadLetterRepository, FailedUpdate
from storage.repositories.funnel import DeliveryState, Figures, FunnelRepository, Start
from storage.repositories.messages import MessageRecord, MessageRepository
from storage.repositories.payment_events import (
    OutboxRepository,
    PaymentEventRepository,
    ReceivedWebhook,
)
from storage.repositories.payments import NewCharge, PaymentRepository
from storage.repositories.timers import NewTimer, TimerOutcome, TimerRepository
from storage.repositories.users import Attribution, BotUserRepository, UserSeen

__all__ = [
    "Attribution",
    "BotRecord",
    "BotRepository",
    "BotUserRepository",
    "DeadLetterRepository",
    "DeliveryState",
    "FailedUpdate",
    "Figures",
    "FunnelRepository",
    "MessageRecord",
    "MessageRepository",
    "NewCharge",
    "NewTimer",
    "OutboxRepository",
    "PaymentEventRepository",
    "PaymentRepository",
    "ReceivedWebhook",
    "Start",
    "TimerOutcome",
    "TimerRepository",
    "UserSeen",
]
