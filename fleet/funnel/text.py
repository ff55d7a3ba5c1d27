"""Texts a step sends: placeholders filled (values HTML-escaped), and whether a text fits
a caption once Telegram has parsed its entities."""

from __future__ import annotations

import html
import re
from collections.abc import Mapping

from fleet.config_funnel import PLACEHOLDERS

CAPTION_LIMIT = 1024  # characters of a media caption after entity parsing
MESSAGE_LIMIT = 4096
_PLACEHOLDER = re.compile(r"\{(" + "|".join(sorted(PLACEHOLDERS)) + r")\}")
_TAG = re.compile(r"<[^>]*>")


def render(template: str, values: Mapping[str, str]) -> str:
    """``{first_name}`` and friends filled in; a value is text, never markup (escaped), a
    placeholder without a value becomes empty."""
    return _PLACEHOLDER.sub(
        lambda m: html.escape(values.get(m.group(1), ""), quote=False), template
    )


def visible_length(text: str) -> int:
    """Length as Telegram counts it for HTML text: tags gone, entities one character,
    in UTF-16 code units."""
    plain = html.unescape(_TAG.sub("", text))
    return len(plain.encode("utf-16-le")) // 2


def fits_caption(text: str) -> bool:
    return visible_length(text) <= CAPTION_LIMIT
