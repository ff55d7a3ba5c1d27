"""Logging, configured once by the CLI: text for terminals, JSON lines for journald.

Formatters scrub anything shaped like a bot token or a URL password from the
final line, tracebacks included: secrets never reach a log even when some
library puts a request URL in an exception.
"""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime
from typing import Literal

import orjson

# "123456789:AA..." anywhere (also inside ".../bot<token>/sendMessage").
_TOKEN_RE = re.compile(r"\d{3,20}:[A-Za-z0-9_-]{20,}")
_URL_PASSWORD_RE = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://[^:/@\s]*):[^@/\s]+@")
_QUERY_PASSWORD_RE = re.compile(r"(?P<key>[?&](?:ssl)?password=)[^&\s]+", re.IGNORECASE)

LogFormat = Literal["text", "json"]


def redact(text: str) -> str:
    text = _TOKEN_RE.sub("<token>", text)
    text = _QUERY_PASSWORD_RE.sub(r"\g<key>***", text)
    return _URL_PASSWORD_RE.sub(r"\g<scheme>:***@", text)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line; ``extra={"bot_id": ...}`` fields are kept."""

    _STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key not in self._STANDARD and not key.startswith("_"):
                entry[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str = "INFO", fmt: LogFormat = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Chatty at INFO and not ours to narrate ("aiogram.event": a line per update).
    # "apscheduler.executors": two lines per job run, several runs a second.
    for name in ("alembic", "aiohttp.access", "pgserver", "aiogram.event", "apscheduler.executors"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
