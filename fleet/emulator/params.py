"""Method parameters from a query string, a form or a JSON body, coerced like Telegram does.

Form fields arrive as strings (aiogram JSON-encodes numbers, booleans, objects
and arrays), JSON bodies as typed values; both read the same way here. A bad
value is a 400 whose description names the parameter, never a 500.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from fleet.emulator.errors import ApiError, bad_request

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off", ""})
_MAX_INT = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Upload:
    """A file part of a multipart request: only what the emulator needs, not the bytes."""

    filename: str
    content_type: str
    size: int
    digest: str  # sha256 hex of the content


def _wrong(name: str, what: str) -> ApiError:
    return bad_request(f'parameter "{name}" must be {what}')


class Params:
    __slots__ = ("_raw", "files")

    def __init__(self, raw: dict[str, Any], files: dict[str, Upload] | None = None) -> None:
        self._raw = raw
        self.files: dict[str, Upload] = files or {}

    def raw(self, name: str) -> Any:
        value = self._raw.get(name)
        if value is None or value == "":
            upload = self.files.get(name)
            return upload
        return value

    def has(self, name: str) -> bool:
        return self.raw(name) is not None

    def names(self) -> list[str]:
        return [*self._raw, *self.files]

    # -- scalars --------------------------------------------------------------

    def string(self, name: str, *, max_len: int | None = None) -> str | None:
        value = self.raw(name)
        if value is None:
            return None
        if isinstance(value, bool | dict | list | Upload):
            raise _wrong(name, "a string")
        text = value if isinstance(value, str) else str(value)
        if max_len is not None and len(text) > max_len:
            raise bad_request(f'parameter "{name}" is too long')
        return text

    def need_string(self, name: str, *, empty: str | None = None) -> str:
        value = self.string(name)
        if value is None or value == "":
            raise bad_request(empty or f"{name} is empty")
        return value

    def integer(self, name: str, *, lo: int | None = None, hi: int | None = None) -> int | None:
        value = self.raw(name)
        if value is None:
            return None
        number: int
        if isinstance(value, bool):
            raise _wrong(name, "an integer")
        if isinstance(value, int):
            number = value
        elif isinstance(value, float) and value.is_integer():
            number = int(value)
        elif isinstance(value, str):
            try:
                number = int(value.strip())
            except ValueError:
                raise _wrong(name, "an integer") from None
        else:
            raise _wrong(name, "an integer")
        if abs(number) > _MAX_INT:
            raise _wrong(name, "a 64-bit integer")
        if (lo is not None and number < lo) or (hi is not None and number > hi):
            raise bad_request(f'parameter "{name}" is out of range')
        return number

    def need_integer(self, name: str, *, empty: str | None = None) -> int:
        value = self.integer(name)
        if value is None:
            raise bad_request(empty or f"{name} is empty")
        return value

    def number(self, name: str) -> float | None:
        value = self.raw(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise _wrong(name, "a number")
        try:
            result = float(value)
        except ValueError:
            raise _wrong(name, "a number") from None
        if result != result or result in (float("inf"), float("-inf")):
            raise _wrong(name, "a finite number")
        return result

    def boolean(self, name: str, default: bool = False) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
        raise _wrong(name, "a boolean")

    # -- JSON objects and arrays ----------------------------------------------

    def _decoded(self, name: str, what: str) -> Any:
        value = self.raw(name)
        if isinstance(value, str):
            try:
                return orjson.loads(value)
            except orjson.JSONDecodeError:
                raise bad_request(f"can't parse {name} JSON {what}") from None
        return value

    def obj(self, name: str) -> dict[str, Any] | None:
        value = self._decoded(name, "object")
        if value is None:
            return None
        if not isinstance(value, dict):
            raise _wrong(name, "a JSON object")
        return value

    def array(self, name: str) -> list[Any] | None:
        value = self._decoded(name, "array")
        if value is None:
            return None
        if not isinstance(value, list):
            raise _wrong(name, "a JSON array")
        return value

    def string_list(self, name: str) -> list[str] | None:
        items = self.array(name)
        if items is None:
            return None
        if not all(isinstance(item, str) for item in items):
            raise _wrong(name, "an array of strings")
        return items

    # -- Telegram-specific ----------------------------------------------------

    def chat_id(self, name: str = "chat_id") -> int | str:
        """An integer id or ``@username``; Telegram says "chat not found" for anything else."""
        value = self.raw(name)
        if value is None:
            raise bad_request(f"{name} is empty")
        if isinstance(value, bool | dict | list | Upload):
            raise _wrong(name, "an integer or a string")
        if isinstance(value, float):
            if not value.is_integer():
                raise bad_request("chat not found")
            value = int(value)
        if isinstance(value, int):
            if abs(value) > _MAX_INT:
                raise bad_request("chat not found")
            return value
        text = str(value).strip()
        if text.startswith("@") and len(text) > 1:
            return text
        try:
            number = int(text)
        except ValueError:
            raise bad_request("chat not found") from None
        if abs(number) > _MAX_INT:
            raise bad_request("chat not found")
        return number
