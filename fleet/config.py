"""The configuration model: every key of ``config.yaml``.

A leaf module (pydantic only). Loading the YAML file, ``${ENV}`` interpolation
and error messages with file and line live in :mod:`fleet.config_file`.
"""

from __future__ import annotations

import os
import re
import socket
from typing import Annotated, Any, Literal, Self

from pydantic import (
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from fleet.config_base import ConfigConsistencyError, Loc, Section, blank_to_none
from fleet.config_funnel import FunnelConfig

# Bot ids appear in Redis keys, URLs and metric labels: keep them short and plain.
BotId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
# What BotFather hands out: "<bot numeric id>:<secret>".
_TOKEN_RE = re.compile(r"^[0-9]{1,20}:[A-Za-z0-9_-]{20,}$")
_WEBHOOK_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{16,256}$")


def _default_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class InstanceConfig(Section):
    id: str = Field(default_factory=_default_instance_id, min_length=1, max_length=128)
    capacity: float = Field(default=1.0, gt=0, description="Relative weight in bot assignment.")

    @model_validator(mode="before")
    @classmethod
    def _default_id(cls, data: object) -> object:
        # "id: ${BOTFLEET_INSTANCE_ID:-}" means "not set": fall back to hostname-pid.
        if isinstance(data, dict) and blank_to_none(data.get("id", "")) is None:
            return {k: v for k, v in data.items() if k != "id"}
        return data


class RedisConfig(Section):
    url: SecretStr | None = Field(
        default=None, description="redis:// or unix:// URL; unset: embedded Redis (demo only)."
    )
    pool_size: int = Field(default=64, ge=1, le=10_000)
    pool_timeout: float = Field(
        default=30.0, gt=0, le=300, description="How long a burst waits for a free connection."
    )
    key_prefix: str = Field(default="botfleet", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    connect_timeout: float = Field(default=5.0, gt=0, le=60)
    command_timeout: float = Field(
        default=5.0, gt=0, le=300, description="A command without an answer this long fails."
    )

    _blank = field_validator("url", mode="before")(blank_to_none)


class DatabaseConfig(Section):
    url: SecretStr | None = Field(
        default=None,
        description="postgresql:// URL; unset: embedded PostgreSQL (demo only).",
    )
    pool_size: int = Field(default=10, ge=1, le=1_000)
    max_overflow: int = Field(default=10, ge=0, le=1_000)
    pool_timeout: float = Field(default=10.0, gt=0, le=300)
    connect_timeout: float = Field(default=5.0, gt=0, le=60)
    statement_timeout: float = Field(default=30.0, gt=0, le=3_600)

    _blank = field_validator("url", mode="before")(blank_to_none)


class HttpConfig(Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65_535)
    public_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s/]+(/[^\s]*)?$",
        description="How Telegram and gateways reach this instance (webhook mode).",
    )

    _blank = field_validator("public_url", mode="before")(blank_to_none)


class SendLimitsConfig(Section):
    """Telegram's flood limits, kept by every instance together (token buckets in Redis)."""

    bot_per_second: float = Field(
        default=30.0, gt=0, le=10_000, description="Messages per second per bot (paid: 1000)."
    )
    bot_burst: float = Field(default=30.0, ge=1, le=10_000)
    chat_per_second: float = Field(default=1.0, gt=0, le=100, description="Per private chat.")
    chat_burst: float = Field(default=3.0, ge=1, le=100)
    group_per_minute: float = Field(default=20.0, gt=0, le=6_000, description="Per group chat.")
    group_burst: float = Field(default=20.0, ge=1, le=6_000)


class TelegramConfig(Section):
    api_base: str = Field(default="https://api.telegram.org", pattern=r"^https?://[^\s]+$")
    mode: Literal["polling", "webhook"] = "polling"
    polling_timeout: int = Field(default=25, ge=0, le=50)
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="Instance secret from which each bot's webhook secret token is derived.",
    )
    send_limits: SendLimitsConfig = Field(default_factory=SendLimitsConfig)
    send_attempts: int = Field(
        default=6, ge=1, le=50, description="Tries of one send on 5xx or when nothing left."
    )
    send_max_wait: float = Field(
        default=120.0,
        gt=0,
        le=3_600,
        description="Longest wait for a send slot (a 429 pause); then the update is retried.",
    )

    _blank = field_validator("webhook_secret", mode="before")(blank_to_none)

    @field_validator("webhook_secret")
    @classmethod
    def _secret_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _WEBHOOK_SECRET_RE.fullmatch(value.get_secret_value()):
            raise ValueError("must be 16-256 characters of A-Z, a-z, 0-9, _ and -")
        return value


class RuntimeConfig(Section):
    """How the daemon runs its bots: concurrency, user limits, shutdown and reload."""

    max_concurrent_updates: int = Field(
        default=512, ge=1, le=100_000, description="Updates in flight across all bots."
    )
    max_updates_per_bot: int = Field(
        default=32,
        ge=1,
        le=10_000,
        description="Updates in flight for one bot: a stalled bot holds no more than this.",
    )
    update_attempts: int = Field(
        default=5,
        ge=1,
        le=100,
        description="Tries of an update failing on Redis, PostgreSQL or the network before"
        " it goes to dead letters.",
    )
    replay_interval: float = Field(
        default=5.0, gt=0, le=3_600, description="How often dead letters marked for replay are run."
    )
    timers_interval: float = Field(
        default=1.0,
        gt=0,
        le=600,
        description="How often due timers (downsells, upsells) are looked for, by every instance.",
    )
    dispatcher_idle_seconds: float = Field(
        default=600.0,
        gt=0,
        le=86_400,
        description="A bot without updates this long gives its Dispatcher's memory back.",
    )
    start_debounce_seconds: float = Field(
        default=3.0, ge=0, le=3_600, description="Repeated /start within this window: one welcome."
    )
    user_messages_per_minute: int = Field(
        default=40, ge=1, le=10_000, description="Per-user flood limit, shared by instances."
    )
    shutdown_grace: float = Field(default=10.0, gt=0, le=600, description="Drain in-flight work.")
    shutdown_deadline: float = Field(
        default=20.0, gt=0, le=900, description="Then cancel; stop within this many seconds."
    )
    config_poll_interval: float = Field(
        default=1.0, gt=0, le=60, description="How often the config file is checked for changes."
    )
    watchdog: bool = Field(default=True, description="Ping systemd's watchdog when it asks.")


class LeasesConfig(Section):
    """Bot leases across instances (client-go ratios: ttl > renew_deadline > 1.2 x retry)."""

    ttl: float = Field(default=15.0, gt=0, le=600, description="A lease lives this long unrenewed.")
    renew_deadline: float = Field(
        default=10.0, gt=0, le=600, description="Stop a bot whose lease went unrenewed this long."
    )
    retry_period: float = Field(
        default=2.0, gt=0, le=120, description="Heartbeat, renew and acquire every this often."
    )
    takeover_grace: float = Field(
        default=4.0, ge=0, le=600, description="A free lease waits this long for its HRW owner."
    )

    @model_validator(mode="after")
    def _ratios(self) -> Self:
        if not self.renew_deadline < self.ttl:
            raise ValueError("renew_deadline must be below ttl (a runner stops before expiry)")
        if not 1.2 * self.retry_period < self.renew_deadline:
            raise ValueError("renew_deadline must exceed 1.2 x retry_period")
        return self


GatewayKind = Literal["sandbox", "mercadopago", "pushinpay"]
_GATEWAY_MIN_CENTS = {"pushinpay": 50}  # its cashIn refuses less; others take a cent
_GATEWAY_BASES: dict[str, str] = {
    "mercadopago": "https://api.mercadopago.com",
    "pushinpay": "https://api.pushinpay.com.br/api",
}


class GatewayConfig(Section):
    """One PIX gateway account; funnels name it by ``id``."""

    id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")]
    kind: GatewayKind
    api_base: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s]+$",
        description="The gateway's API (default: its production URL; tests point at a fake).",
    )
    access_token: SecretStr | None = Field(default=None, description="API credential.")
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="Mercado Pago: the app's signing key; sandbox: the signing secret;"
        " PushinPay: the value of the custom header set in its panel (optional).",
    )
    timeout: float = Field(default=10.0, gt=0, le=60, description="Per gateway API call.")
    payer_email_domain: str = Field(
        default="example.com",
        pattern=r"^[A-Za-z0-9.-]+\.[A-Za-z]{2,}$",
        description="Mercado Pago wants a payer e-mail: a pseudonymous one is built in this"
        " domain (never the buyer's data).",
    )

    _blank = field_validator("access_token", "webhook_secret", "api_base", mode="before")(
        blank_to_none
    )

    @model_validator(mode="after")
    def _credentials(self) -> Self:
        if self.kind in ("mercadopago", "pushinpay") and self.access_token is None:
            raise ValueError(f"access_token is required for a {self.kind} gateway")
        if self.kind == "mercadopago" and self.webhook_secret is None:
            raise ValueError("webhook_secret (the app's signing key) is required for mercadopago")
        return self

    @property
    def base_url(self) -> str | None:
        return self.api_base or _GATEWAY_BASES.get(self.kind)


class PaymentsConfig(Section):
    """How charges are made and confirmed (the gateways themselves: ``gateways``)."""

    url_secret: SecretStr | None = Field(
        default=None,
        description="Instance secret from which each gateway's webhook URL secret is derived.",
    )
    currency: Literal["BRL"] = "BRL"
    pix_expiry_minutes: int = Field(default=30, ge=5, le=1440)
    reuse_seconds: int = Field(
        default=300, ge=0, le=3600, description="A pending charge for the same offer is reused."
    )
    cooldown_seconds: int = Field(
        default=20, ge=0, le=3600, description="A user's new charges at most this often."
    )
    resume_after_seconds: int = Field(
        default=45,
        ge=1,
        le=3600,
        description="A charge still being made this long was left by a dead instance: the next"
        " try makes it (same idempotency key).",
    )
    reconcile_after_seconds: int = Field(
        default=120, ge=1, le=86_400, description="A pending charge this old is asked about."
    )
    jobs_interval: float = Field(
        default=15.0, gt=0, le=3600, description="Expiry, reconciliation, retries and outbox."
    )
    retry_base_seconds: float = Field(
        default=5.0,
        gt=0,
        le=600,
        description="A webhook whose processing failed (the gateway away) is tried again after"
        " this, doubling each time up to 15 minutes.",
    )
    checks_per_minute: int = Field(
        default=6, ge=1, le=600, description='"I paid" checks per user and minute.'
    )
    webhook_max_bytes: int = Field(default=65_536, ge=1024, le=1_048_576)

    _blank = field_validator("url_secret", mode="before")(blank_to_none)

    @field_validator("url_secret")
    @classmethod
    def _secret_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _WEBHOOK_SECRET_RE.fullmatch(value.get_secret_value()):
            raise ValueError("must be 16-256 characters of A-Z, a-z, 0-9, _ and -")
        return value


class BotConfig(Section):
    id: BotId
    token: SecretStr
    enabled: bool = True
    funnel: str
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="Funnel keys this bot changes (welcome, messages, plans...), merged over"
        " its funnel template.",
    )

    @field_validator("token")
    @classmethod
    def _token_shape(cls, value: SecretStr) -> SecretStr:
        # The message never repeats the value: it is a secret.
        if not _TOKEN_RE.fullmatch(value.get_secret_value()):
            raise ValueError("not a bot token (expected <digits>:<secret> as BotFather gives)")
        return value

    @property
    def telegram_id(self) -> int:
        """The bot's Telegram user id: the number before ':' in its token."""
        return int(self.token.get_secret_value().split(":", 1)[0])


class FleetConfig(Section):
    instance: InstanceConfig = Field(default_factory=InstanceConfig)
    redis: RedisConfig = Field(default_factory=RedisConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    telegram: TelegramConfig = Field(default_factory=TelegramConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    leases: LeasesConfig = Field(default_factory=LeasesConfig)
    payments: PaymentsConfig = Field(default_factory=PaymentsConfig)
    gateways: list[GatewayConfig] = Field(default_factory=list)
    funnels: dict[str, FunnelConfig] = Field(default_factory=dict)
    bots: list[BotConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        problems: list[tuple[Loc, str]] = []
        ids: dict[str, int] = {}
        tokens: dict[str, int] = {}
        for i, bot in enumerate(self.bots):
            if bot.id in ids:
                problems.append((("bots", i, "id"), f"duplicate bot id (also bots[{ids[bot.id]}])"))
            ids.setdefault(bot.id, i)
            secret = bot.token.get_secret_value()
            if secret in tokens:
                problems.append((("bots", i, "token"), f"same token as bots[{tokens[secret]}]"))
            tokens.setdefault(secret, i)
            if bot.funnel not in self.funnels:
                known = ", ".join(sorted(self.funnels)) or "none defined"
                problems.append(
                    (("bots", i, "funnel"), f"unknown funnel {bot.funnel!r} (known: {known})")
                )
            elif bot.overrides:
                problems += _override_problems(self.funnels[bot.funnel], bot.overrides, i)
        gateways: dict[str, int] = {}
        for i, gateway in enumerate(self.gateways):
            if gateway.id in gateways:
                problems.append(
                    (
                        ("gateways", i, "id"),
                        f"duplicate gateway id (also gateways[{gateways[gateway.id]}])",
                    )
                )
            gateways.setdefault(gateway.id, i)
        for name, funnel in self.funnels.items():
            if funnel.gateway is not None and funnel.gateway not in gateways:
                known = ", ".join(sorted(gateways)) or "none defined"
                problems.append(
                    (
                        ("funnels", name, "gateway"),
                        f"unknown gateway {funnel.gateway!r} (known: {known})",
                    )
                )
        for name, funnel in self.funnels.items():
            if funnel.gateway in gateways:
                kind = self.gateways[gateways[funnel.gateway]].kind
                least = _GATEWAY_MIN_CENTS.get(kind, 1)
                problems += [
                    (("funnels", name, *loc), f"below {kind}'s minimum of {least} cents")
                    for loc, cents in funnel.prices()
                    if cents < least
                ]
        if self.gateways and self.payments.url_secret is None:
            problems.append((("payments", "url_secret"), "required when gateways are configured"))
        if self.runtime.shutdown_deadline <= self.runtime.shutdown_grace:
            problems.append(
                (("runtime", "shutdown_deadline"), "must be longer than runtime.shutdown_grace")
            )
        if self.telegram.mode == "webhook":
            if self.http.public_url is None:
                problems.append((("http", "public_url"), "required when telegram.mode is webhook"))
            if self.telegram.webhook_secret is None:
                problems.append(
                    (("telegram", "webhook_secret"), "required when telegram.mode is webhook")
                )
        if problems:
            raise ConfigConsistencyError(problems)
        return self

    def bot(self, bot_id: str) -> BotConfig:
        for bot in self.bots:
            if bot.id == bot_id:
                return bot
        raise KeyError(bot_id)

    def funnel_for(self, bot: BotConfig) -> FunnelConfig:
        """The bot's funnel: its template with the bot's overrides merged over it."""
        template = self.funnels[bot.funnel]
        if not bot.overrides:
            return template
        return FunnelConfig.model_validate(_merged(template.model_dump(), bot.overrides))

    def enabled_bots(self) -> list[BotConfig]:
        return [bot for bot in self.bots if bot.enabled]

    def gateway(self, gateway_id: str) -> GatewayConfig:
        for gateway in self.gateways:
            if gateway.id == gateway_id:
                return gateway
        raise KeyError(gateway_id)


def _merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``changes`` over ``base``: mappings merged key by key, anything else replaced."""
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


def _override_problems(
    template: FunnelConfig, overrides: dict[str, Any], index: int
) -> list[tuple[Loc, str]]:
    """Each problem of a bot's merged funnel, at its path under ``bots[i].overrides``."""
    try:
        FunnelConfig.model_validate(_merged(template.model_dump(), overrides))
    except ValidationError as exc:
        return [(("bots", index, "overrides", *e["loc"]), e["msg"]) for e in exc.errors()]
    return []
