"""Reading what a bot sends: formatted text, reply markup and input files, checked like Telegram."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from fleet.emulator.entities import Entity, parse
from fleet.emulator.errors import bad_request
from fleet.emulator.params import Params, Upload

if TYPE_CHECKING:
    from fleet.emulator.emulator import TelegramEmulator

TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024
_BUTTON_ACTIONS = (
    "url",
    "callback_data",
    "web_app",
    "login_url",
    "switch_inline_query",
    "switch_inline_query_current_chat",
    "switch_inline_query_chosen_chat",
    "copy_text",
    "callback_game",
    "pay",
)
_PHOTO_SIZES = ((90, 90), (320, 320), (800, 800))


def formatted_text(
    p: Params, field: str, entities_field: str, *, required: bool, limit: int
) -> tuple[str | None, list[Entity]]:
    """Text after parse_mode, with its entities; errors worded as Telegram words them."""
    raw = p.string(field)
    if raw is None or raw == "":
        if required:
            raise bad_request("message text is empty")
        return None, []
    mode = p.string("parse_mode")
    if mode:
        text, entities = parse(raw, mode)
    else:
        text, entities = raw, _explicit_entities(p, entities_field)
    if required and not text.strip():
        raise bad_request("message text is empty")
    if len(text) > limit:
        raise bad_request("message is too long" if required else "message caption is too long")
    return text, entities


def _explicit_entities(p: Params, name: str) -> list[Entity]:
    items = p.array(name)
    if items is None:
        return []
    for item in items:
        ok = isinstance(item, dict) and isinstance(item.get("type"), str)
        ok = ok and all(
            isinstance(item.get(key), int) and not isinstance(item.get(key), bool)
            for key in ("offset", "length")
        )
        if not ok:
            raise bad_request(f'can\'t parse entities: field "{name}" must hold MessageEntity')
    return items


def with_text(content: dict[str, Any], key: str, text: str | None, entities: list[Entity]) -> None:
    if text is None:
        return
    content[key] = text
    if entities:
        content["entities" if key == "text" else "caption_entities"] = entities


def reply_markup(p: Params) -> dict[str, Any] | None:
    """The markup to echo in the Message: only inline keyboards are part of it."""
    markup = p.obj("reply_markup")
    if markup is None:
        return None
    if "inline_keyboard" in markup:
        rows = markup["inline_keyboard"]
        if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
            raise bad_request('field "inline_keyboard" must be an Array of Arrays')
        for row in rows:
            for button in row:
                _check_button(button)
        return {"inline_keyboard": rows}
    if any(key in markup for key in ("keyboard", "remove_keyboard", "force_reply")):
        keyboard = markup.get("keyboard")
        if keyboard is not None and not isinstance(keyboard, list):
            raise bad_request('field "keyboard" must be an Array of Arrays')
        return None
    raise bad_request("can't parse reply keyboard markup JSON object")


def _check_button(button: Any) -> None:
    if not isinstance(button, dict):
        raise bad_request("can't parse inline keyboard button: object expected")
    if not isinstance(button.get("text"), str) or not button["text"]:
        raise bad_request("can't parse inline keyboard button: Text must be non-empty")
    actions = [key for key in _BUTTON_ACTIONS if key in button]
    if len(actions) != 1:
        raise bad_request(
            "can't parse inline keyboard button: "
            "InlineKeyboardButton must have exactly one optional field"
        )
    if "callback_data" in button:
        data = button["callback_data"]
        if not isinstance(data, str) or not 1 <= len(data.encode("utf-8")) <= 64:
            raise bad_request("BUTTON_DATA_INVALID")
    if "url" in button and not (
        isinstance(button["url"], str)
        and button["url"].startswith(("http://", "https://", "tg://"))
    ):
        raise bad_request("BUTTON_URL_INVALID")


def input_file(
    emu: TelegramEmulator, p: Params, name: str, kind: str, value: Any = None
) -> dict[str, Any] | list[dict[str, Any]]:
    """A file object for ``kind`` from an upload, an HTTP URL or a known file_id."""
    value = p.raw(name) if value is None else value
    if value is None or value == "":
        raise bad_request(f"there is no {kind} in the request")
    if isinstance(value, str) and value.startswith("attach://"):
        upload = p.files.get(value.removeprefix("attach://"))
        if upload is None:
            raise bad_request(f"can't find attached file {value!r}")
        value = upload
    if isinstance(value, Upload):
        return _new_file(emu, kind, value.digest, value.size, value.filename, value.content_type)
    if not isinstance(value, str):
        raise bad_request(f'parameter "{name}" must be a file, a URL or a file_id')
    if value.startswith(("http://", "https://")):
        if urlsplit(value).hostname in (None, "") or _unreachable(value):
            # Telegram downloads the URL itself; a host it cannot reach fails the send.
            raise bad_request("failed to get HTTP URL content")
        return _new_file(emu, kind, emu.digest(value), 100_000, value.rsplit("/", 1)[-1], None)
    known = emu.files.get(value)
    if known is None:
        raise bad_request("wrong file identifier/HTTP URL specified")
    if kind == "photo":
        return [{k: v for k, v in known.items() if k != "kind"}]
    if known["kind"] != kind and not (kind == "document"):
        raise bad_request(f"can't use file of type {known['kind'].title()} as {kind.title()}")
    return {k: v for k, v in known.items() if k != "kind"}


def _unreachable(url: str) -> bool:
    """No internet here: hosts under the reserved ``.invalid`` TLD stand for dead URLs."""
    host = urlsplit(url).hostname or ""
    return host == "invalid" or host.endswith(".invalid")


def _new_file(
    emu: TelegramEmulator, kind: str, digest: str, size: int, filename: str, mime: str | None
) -> dict[str, Any] | list[dict[str, Any]]:
    if kind == "photo":
        return [
            emu.remember_file(
                "photo",
                emu.digest(f"{digest}:{width}"),
                {"width": width, "height": height, "file_size": max(1, size * width // 800)},
            )
            for width, height in _PHOTO_SIZES
        ]
    extra: dict[str, Any] = {"file_size": size}
    if kind == "video":
        extra |= {"width": 1280, "height": 720, "duration": 10, "mime_type": mime or "video/mp4"}
    elif kind == "audio":
        extra |= {"duration": 60, "mime_type": mime or "audio/mpeg", "file_name": filename}
    else:
        extra |= {"file_name": filename or "file", "mime_type": mime or "application/octet-stream"}
    return emu.remember_file(kind, digest, extra)
