"""MarkdownV2 and legacy Markdown into text plus entities, with Telegram's error wording."""

from __future__ import annotations

from typing import Any

from fleet.emulator.entities import Entity, TextOutput, byte_offset, is_name_char, parse_error

# -- MarkdownV2 -----------------------------------------------------------------

_RESERVED_V2 = frozenset("_*[]()~`>#+-=|{}.!")
_V2_NAMES = {
    "bold": "Bold",
    "italic": "Italic",
    "underline": "Underline",
    "strikethrough": "Strikethrough",
    "spoiler": "Spoiler",
    "code": "Code",
    "pre": "Pre",
    "text_link": "TextUrl",
    "blockquote": "BlockQuote",
}
_V2_MARKERS = (("||", "spoiler"), ("__", "underline"), ("*", "bold"), ("_", "italic"))


def _v2_marker(text: str, i: int) -> tuple[str, str] | None:
    for marker, kind in _V2_MARKERS:
        if text.startswith(marker, i):
            return marker, kind
    if text[i] == "~":
        return "~", "strikethrough"
    return None


def parse_markdown_v2(text: str) -> tuple[str, list[Entity]]:
    out = TextOutput()
    stack: list[tuple[str, int, int]] = []  # kind, input index, output offset
    entities: list[Entity] = []
    n = len(text)
    i = 0

    def close(kind: str, begin: int, start: int, **extra: Any) -> None:
        if out.pos > start:
            entities.append({"type": kind, "offset": start, "length": out.pos - start, **extra})

    while i < n:
        char = text[i]
        in_code = bool(stack) and stack[-1][0] in ("code", "pre")
        if char == "\\" and i + 1 < n and 0 < ord(text[i + 1]) <= 126:
            out.add(text[i + 1])
            i += 2
            continue
        if in_code:
            kind, begin, start = stack[-1]
            fence = "```" if kind == "pre" else "`"
            if text.startswith(fence, i):
                stack.pop()
                close(kind, begin, start)
                i += len(fence)
            else:
                out.add(char)
                i += 1
            continue
        if char == "`":
            if text.startswith("```", i):
                stack.append(("pre", i, out.pos))
                i += 3
                newline = text.find("\n", i)
                if newline >= 0 and _is_language(text[i:newline]):
                    i = newline + 1  # the language line is not part of the text
            else:
                stack.append(("code", i, out.pos))
                i += 1
            continue
        if char == ">" and (i == 0 or text[i - 1] == "\n") and not stack:
            stack.append(("blockquote", i, out.pos))
            i += 1
            continue
        if char == "\n" and stack and stack[-1][0] == "blockquote":
            if not text.startswith(">", i + 1):
                kind, begin, start = stack.pop()
                close(kind, begin, start)
                out.add("\n")
            else:
                out.add("\n")
                i += 1  # the next line's '>' continues the quote
            i += 1
            continue
        if char == "[":
            stack.append(("text_link", i, out.pos))
            i += 1
            continue
        if char == "]" and stack and stack[-1][0] == "text_link":
            kind, begin, start = stack.pop()
            i += 1
            if i < n and text[i] == "(":
                url, i = _v2_url(text, i + 1)
                if url:
                    close(kind, begin, start, url=url)
            continue
        marker = _v2_marker(text, i)
        if marker is not None:
            symbol, kind = marker
            if stack and stack[-1][0] == kind:
                _, begin, start = stack.pop()
                close(kind, begin, start)
            else:
                stack.append((kind, i, out.pos))
            i += len(symbol)
            continue
        if char in _RESERVED_V2:
            raise parse_error(
                f"Character '{char}' is reserved and must be escaped with the preceding '\\'"
            )
        out.add(char)
        i += 1
    while stack and stack[-1][0] == "blockquote":
        kind, begin, start = stack.pop()
        close(kind, begin, start)
    if stack:
        kind, begin, _ = stack[-1]
        raise parse_error(
            f"Can't find end of {_V2_NAMES[kind]} entity at byte offset {byte_offset(text, begin)}"
        )
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return out.text(), entities


def _is_language(line: str) -> bool:
    return bool(line) and all(is_name_char(c) or c in "+#." for c in line)


def _v2_url(text: str, i: int) -> tuple[str, int]:
    url: list[str] = []
    n = len(text)
    begin = i
    while i < n and text[i] != ")":
        if text[i] == "\\" and i + 1 < n:
            i += 1
        url.append(text[i])
        i += 1
    if i >= n:
        raise parse_error(f"Can't find end of a URL at byte offset {byte_offset(text, begin)}")
    return "".join(url), i + 1


# -- Markdown (legacy) --------------------------------------------------------------

_LEGACY = {"*": "bold", "_": "italic", "`": "code"}


def parse_markdown(text: str) -> tuple[str, list[Entity]]:
    out = TextOutput()
    entities: list[Entity] = []
    n = len(text)
    i = 0
    while i < n:
        char = text[i]
        if char == "\\" and i + 1 < n and text[i + 1] in "_*`[":
            out.add(text[i + 1])
            i += 2
            continue
        if char not in "*_`[":
            out.add(char)
            i += 1
            continue
        begin = i
        if text.startswith("```", i):
            end = text.find("```", i + 3)
            kind, body, i = "pre", text[i + 3 : end], end + 3
        elif char == "[":
            link = _legacy_link(text, i)
            if link is not None:
                label, url, i = link
                start = out.pos
                out.add(label)
                if out.pos > start and url:
                    entities.append(_link(start, out.pos - start, url))
                continue
            kind, body, end = "text_link", "", -1
        else:
            end = text.find(char, i + 1)
            kind, body, i = _LEGACY[char], text[i + 1 : end], end + 1
        if end < 0:
            raise parse_error(
                f"Can't find end of the entity starting at byte offset {byte_offset(text, begin)}"
            )
        start = out.pos
        out.add(body)
        if out.pos > start:
            entities.append({"type": kind, "offset": start, "length": out.pos - start})
    return out.text(), entities


def _legacy_link(text: str, i: int) -> tuple[str, str, int] | None:
    """``[label](url)`` at ``i``: (label, url, index after it)."""
    end = text.find("]", i + 1)
    if end < 0 or not text.startswith("(", end + 1):
        return None
    url_end = text.find(")", end + 2)
    if url_end < 0:
        return None
    return text[i + 1 : end], text[end + 2 : url_end], url_end + 1


def _link(offset: int, length: int, url: str) -> Entity:
    return {"type": "text_link", "offset": offset, "length": length, "url": url}
