"""Logs never carry a bot token or a URL password, in text or JSON."""

from __future__ import annotations

import logging

import orjson
from sqlalchemy import make_url

from fleet.logs import JsonFormatter, TextFormatter, configure_logging, redact
from storage.database import redacted

TOKEN = "7000000001:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"


def record(msg: str, *args: object, exc: bool = False, **extra: object) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError(f"POST https://api.telegram.org/bot{TOKEN}/sendMessage failed")
        except RuntimeError:
            import sys

            exc_info = sys.exc_info()
    rec = logging.LogRecord("t", logging.ERROR, __file__, 1, msg, args, exc_info)
    rec.__dict__.update(extra)
    return rec


def test_redact_tokens_and_passwords() -> None:
    assert redact(f"url=/bot{TOKEN}/getMe") == "url=/bot<token>/getMe"
    assert redact("postgresql://bf:hunter2@db:5432/x") == "postgresql://bf:***@db:5432/x"
    assert redact("update 123456 from chat 42: 10:30 ok") == "update 123456 from chat 42: 10:30 ok"
    assert redact("postgresql://bf@db/x?password=hunter2&sslmode=require") == (
        "postgresql://bf@db/x?password=***&sslmode=require"
    )


def test_a_database_url_with_its_password_in_the_query_is_shown_without_it() -> None:
    url = make_url("postgresql://bf:pw@db/x?password=hunter2&sslpassword=s3cret")
    shown = redacted(url)
    assert "hunter2" not in shown and "s3cret" not in shown and ":pw@" not in shown


def test_aiogram_says_nothing_per_update_at_info() -> None:
    """aiogram logs a line per update at INFO ("Update id=... is handled"): not on our hot path."""
    root, event = logging.getLogger(), logging.getLogger("aiogram.event")
    saved = (list(root.handlers), root.level, event.level)
    configure_logging("INFO", "text")
    try:
        assert not event.isEnabledFor(logging.INFO)
        assert logging.getLogger("fleet.runner").isEnabledFor(logging.INFO)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        event.setLevel(saved[2])


def test_text_formatter_scrubs_arguments_and_tracebacks() -> None:
    line = TextFormatter().format(record("bot %s failed with %s", "loja", TOKEN, exc=True))
    assert TOKEN not in line and TOKEN.split(":")[1] not in line
    assert "bot loja failed with <token>" in line
    assert "RuntimeError" in line


def test_json_formatter_keeps_extra_fields_and_scrubs() -> None:
    line = JsonFormatter().format(record("sent via %s", TOKEN, exc=True, bot_id="loja"))
    entry = orjson.loads(line)
    assert entry["bot_id"] == "loja" and entry["level"] == "ERROR"
    assert entry["msg"] == "sent via <token>"
    assert TOKEN not in line
