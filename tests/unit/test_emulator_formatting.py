"""The emulator's parse_mode handling: entities in UTF-16 units and Telegram's error texts."""

from __future__ import annotations

import pytest

from fleet.emulator.entities import command_entities, parse
from fleet.emulator.errors import ApiError


def test_html_entities_count_utf16_units() -> None:
    text, entities = parse('😀 <b>oi <i>você</i></b> <a href="https://x.example">link</a>', "HTML")
    assert text == "😀 oi você link"
    assert entities == [
        {"type": "bold", "offset": 3, "length": 7},
        {"type": "italic", "offset": 6, "length": 4},
        {"type": "text_link", "offset": 11, "length": 4, "url": "https://x.example"},
    ]


def test_html_escapes_and_markdown_v2() -> None:
    assert parse("1 &lt; 2 &amp;&amp; 3", "HTML") == ("1 < 2 && 3", [])
    assert parse("*negrito* e \\.", "MarkdownV2") == (
        "negrito e .",
        [{"type": "bold", "offset": 0, "length": 7}],
    )


@pytest.mark.parametrize(
    ("text", "mode", "detail"),
    [
        ("<b>oi", "HTML", 'Can\'t find end tag corresponding to start tag "b"'),
        ("<x>oi</x>", "HTML", 'Unsupported start tag "x" at byte offset 0'),
        ("<b>oi</i>", "HTML", 'Unmatched end tag at byte offset 5, expected "</b>", found "</i>"'),
        ("preço: 10.00", "MarkdownV2", "Character '.' is reserved"),
    ],
)
def test_broken_markup_is_a_400_with_telegrams_words(text: str, mode: str, detail: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse(text, mode)
    assert caught.value.code == 400
    assert caught.value.description.startswith(f"Bad Request: can't parse entities: {detail}")


def test_commands_in_user_text() -> None:
    assert command_entities("/start promo_1") == [{"type": "bot_command", "offset": 0, "length": 6}]
    assert command_entities("sem comando") == []
