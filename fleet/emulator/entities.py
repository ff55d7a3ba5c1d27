"""Formatting like Telegram's: HTML into text plus entities (Markdown is in markdown.py).

Errors follow tdlib's wording (``can't parse entities: Unsupported start tag
"foo" at byte offset 3``); byte offsets count UTF-8 bytes of the input and
entity offsets count UTF-16 code units of the output, as the Bot API does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from fleet.emulator.errors import ApiError, bad_request

Entity = dict[str, Any]

_COMMAND_RE = re.compile(r"(?<![\w/@])/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?(?![\w/])")
_HTML_SIMPLE = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
    "code": "code",
    "pre": "pre",
}
_HTML_TAGS = frozenset({*_HTML_SIMPLE, "a", "blockquote", "tg-emoji"})
_NAMED = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_SPACES = " \t\r\n"


def utf16_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-16-le")) // 2


def parse_error(detail: str) -> ApiError:
    return bad_request(f"can't parse entities: {detail}")


def byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode("utf-8", "surrogatepass"))


def is_name_char(char: str) -> bool:
    return char.isascii() and (char.isalnum() or char in "-_")


def command_entities(text: str) -> list[Entity]:
    """``bot_command`` entities of a user's text, as clients mark them."""
    if "/" not in text:
        return []
    return [
        {
            "type": "bot_command",
            "offset": utf16_len(text[: m.start()]),
            "length": utf16_len(m.group()),
        }
        for m in _COMMAND_RE.finditer(text)
    ]


def parse(text: str, parse_mode: str | None) -> tuple[str, list[Entity]]:
    if not parse_mode:
        return text, []
    mode = parse_mode.lower()
    if mode == "html":
        return parse_html(text)
    if mode in ("markdownv2", "markdown"):
        from fleet.emulator.markdown import parse_markdown, parse_markdown_v2

        return parse_markdown_v2(text) if mode == "markdownv2" else parse_markdown(text)
    raise bad_request(f"unsupported parse_mode {parse_mode!r}")


# -- HTML -----------------------------------------------------------------------


@dataclass(slots=True)
class _Open:
    tag: str
    begin: int  # index in the input, for error offsets
    start: int  # UTF-16 offset in the output
    attrs: dict[str, str]
    language: str | None = None


@dataclass(slots=True)
class TextOutput:
    parts: list[str] = field(default_factory=list)
    pos: int = 0  # UTF-16 length so far

    def add(self, chunk: str) -> None:
        self.parts.append(chunk)
        self.pos += utf16_len(chunk)

    def text(self) -> str:
        return "".join(self.parts)


def _decode_entity(text: str, i: int) -> tuple[str, int] | None:
    """``&lt;``, ``&#65;``, ``&#x41;`` at ``i``: (character, length); None keeps ``&`` literal."""
    end = text.find(";", i + 1, i + 12)
    if end < 0:
        return None
    name = text[i + 1 : end]
    if name in _NAMED:
        return _NAMED[name], end - i + 1
    if name.startswith("#"):
        digits = name[1:]
        try:
            code = int(digits[1:], 16) if digits[:1] in ("x", "X") else int(digits, 10)
        except ValueError:
            return None
        if 0 < code < 0x110000 and not 0xD800 <= code <= 0xDFFF:
            return chr(code), end - i + 1
    return None


def _unescape(value: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(value):
        if value[i] == "&" and (decoded := _decode_entity(value, i)) is not None:
            out.append(decoded[0])
            i += decoded[1]
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def _read_attrs(text: str, i: int, tag: str, begin: int) -> tuple[dict[str, str], int]:
    attrs: dict[str, str] = {}
    n = len(text)
    at = byte_offset(text, begin)
    while True:
        while i < n and text[i] in _SPACES:
            i += 1
        if i >= n:
            raise parse_error(f"Unclosed start tag at byte offset {at}")
        if text[i] == ">":
            return attrs, i + 1
        start = i
        while i < n and is_name_char(text[i]):
            i += 1
        name = text[start:i].lower()
        if not name:
            raise parse_error(f'Empty attribute name in the tag "{tag}" at byte offset {at}')
        while i < n and text[i] in _SPACES:
            i += 1
        if i >= n or text[i] != "=":
            if tag == "blockquote" and name == "expandable":
                attrs[name] = ""
                continue
            raise parse_error(
                "Expected equal sign in declaration of an attribute of the tag "
                f'"{tag}" at byte offset {at}'
            )
        i += 1
        while i < n and text[i] in _SPACES:
            i += 1
        if i >= n:
            raise parse_error(f"Unclosed start tag at byte offset {at}")
        if text[i] in "\"'":
            end = text.find(text[i], i + 1)
            if end < 0:
                raise parse_error(f"Unclosed start tag at byte offset {at}")
            value, i = text[i + 1 : end], end + 1
        else:
            start = i
            while i < n and text[i] not in _SPACES and text[i] != ">":
                i += 1
            value = text[start:i]
        attrs[name] = _unescape(value)


def _html_entity(item: _Open, length: int, parent: _Open | None) -> Entity | None:
    tag = item.tag
    if tag == "a":
        url = item.attrs.get("href", "")
        if not url:
            return None
        return {"type": "text_link", "offset": item.start, "length": length, "url": url}
    if tag == "blockquote":
        kind = "expandable_blockquote" if "expandable" in item.attrs else "blockquote"
        return {"type": kind, "offset": item.start, "length": length}
    if tag == "tg-emoji":
        emoji_id = item.attrs.get("emoji-id", "")
        if not emoji_id.isdigit():
            return None
        return {
            "type": "custom_emoji",
            "offset": item.start,
            "length": length,
            "custom_emoji_id": emoji_id,
        }
    if tag == "code" and parent is not None and parent.tag == "pre":
        css = item.attrs.get("class", "")
        if css.startswith("language-") and parent.language is None:
            parent.language = css.removeprefix("language-")
            return None
    entity: Entity = {"type": _HTML_SIMPLE[tag], "offset": item.start, "length": length}
    if tag == "pre" and item.language:
        entity["language"] = item.language
    return entity


def parse_html(text: str) -> tuple[str, list[Entity]]:
    out = TextOutput()
    stack: list[_Open] = []
    entities: list[Entity] = []
    n = len(text)
    i = 0
    while i < n:
        char = text[i]
        if char == "&":
            decoded = _decode_entity(text, i)
            if decoded is None:
                out.add("&")
                i += 1
            else:
                out.add(decoded[0])
                i += decoded[1]
            continue
        if char != "<":
            j = i + 1
            while j < n and text[j] not in "<&":
                j += 1
            out.add(text[i:j])
            i = j
            continue
        begin = i
        i += 1
        closing = i < n and text[i] == "/"
        if closing:
            i += 1
        start = i
        while i < n and is_name_char(text[i]):
            i += 1
        tag = text[start:i].lower()
        if closing:
            at = byte_offset(text, begin)
            if not stack:
                raise parse_error(f"Unexpected end tag at byte offset {at}")
            while i < n and text[i] in _SPACES:
                i += 1
            if i >= n or text[i] != ">":
                raise parse_error(f"Unclosed end tag at byte offset {at}")
            i += 1
            item = stack[-1]
            if tag != item.tag:
                raise parse_error(
                    f'Unmatched end tag at byte offset {at}, expected "</{item.tag}>", '
                    f'found "</{tag}>"'
                )
            stack.pop()
            length = out.pos - item.start
            if length > 0:
                entity = _html_entity(item, length, stack[-1] if stack else None)
                if entity is not None:
                    entities.append(entity)
            continue
        if tag not in _HTML_TAGS:
            raise parse_error(
                f'Unsupported start tag "{tag}" at byte offset {byte_offset(text, begin)}'
            )
        attrs, i = _read_attrs(text, i, tag, begin)
        if tag == "span" and attrs.get("class") != "tg-spoiler":
            raise parse_error(
                f'Tag "span" must have class "tg-spoiler" at byte offset {byte_offset(text, begin)}'
            )
        stack.append(_Open(tag, begin, out.pos, attrs))
    if stack:
        raise parse_error(f'Can\'t find end tag corresponding to start tag "{stack[-1].tag}"')
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return out.text(), entities
