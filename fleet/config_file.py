"""Reading ``config.yaml``: line-aware YAML, ``${ENV}`` interpolation, clear errors.

Every problem names the file, the line and the path inside the document
(``bots[3].token: field required (config.yaml line 41)``) and never repeats a
value: a wrong value may be a secret.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from fleet.config import FleetConfig
from fleet.config_base import ConfigConsistencyError, Loc
from fleet.errors import FleetError

M = TypeVar("M", bound=BaseModel)

# ${NAME} or ${NAME:-default}; "$${" escapes a literal "${".
_ENV_RE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

_MESSAGES = {
    "missing": "field required",
    "extra_forbidden": "unknown key",
}


@dataclass(frozen=True)
class ConfigProblem:
    path: str
    message: str
    file: str
    line: int | None = None

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file} line {self.line}"
        if not self.path:
            return f"{where}: {self.message}"
        return f"{self.path}: {self.message} ({where})"


class ConfigError(FleetError):
    """The configuration could not be used; ``problems`` says where and why."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def format_loc(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z0-9_-]+", part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


@dataclass
class _Document:
    file: str
    env: Mapping[str, str]
    lines: dict[Loc, int] = field(default_factory=dict)
    problems: list[ConfigProblem] = field(default_factory=list)
    _scalars: yaml.SafeLoader = field(default_factory=lambda: yaml.SafeLoader(""))

    def problem(self, loc: Loc, message: str) -> None:
        self.problems.append(ConfigProblem(format_loc(loc), message, self.file, self.line(loc)))

    def line(self, loc: Loc) -> int | None:
        # A missing key has no line of its own: point at its nearest parent.
        for end in range(len(loc), -1, -1):
            if loc[:end] in self.lines:
                return self.lines[loc[:end]]
        return None

    def convert(self, node: yaml.Node, loc: Loc) -> Any:
        self.lines.setdefault(loc, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            result: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    self.problem(loc, "keys must be plain strings")
                    continue
                key = str(key_node.value)
                child = (*loc, key)
                if key in result:
                    first = self.lines.get(child)
                    self.lines[child] = key_node.start_mark.line + 1
                    self.problem(child, f"duplicate key (first at line {first})")
                    continue
                self.lines[child] = key_node.start_mark.line + 1
                result[key] = self.convert(value_node, child)
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.convert(item, (*loc, i)) for i, item in enumerate(node.value)]
        assert isinstance(node, yaml.ScalarNode)
        if node.tag == "tag:yaml.org,2002:str" or "${" in node.value:
            node = self._interpolate(node, loc)
        return self._scalars.construct_object(node)

    def _interpolate(self, node: yaml.ScalarNode, loc: Loc) -> yaml.ScalarNode:
        if "$" not in node.value:
            return node

        def substitute(match: re.Match[str]) -> str:
            if match.group(0) == "$${":
                return "${"
            name, default = match.group(1), match.group(2)
            value = self.env.get(name)
            if value is not None:
                return value
            if default is not None:
                return default
            self.problem(loc, f"environment variable {name} is not set and has no default")
            return ""

        value = _ENV_RE.sub(substitute, node.value)
        # A plain scalar is typed by what it says after substitution ("${PORT:-80}" -> 80).
        tag = node.tag
        if node.style is None:
            tag = self._scalars.resolve(yaml.ScalarNode, value, (True, False))  # type: ignore[no-untyped-call]
        return yaml.ScalarNode(tag, value, node.start_mark, node.end_mark, node.style)


def _parse(text: str, file: str, env: Mapping[str, str]) -> tuple[Any, _Document]:
    """Compose and convert the document; syntax errors raise, the rest is collected."""
    doc = _Document(file=file, env=env)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = {} if root is None else doc.convert(root, ())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = None if mark is None else mark.line + 1
        what = " ".join(part for part in (exc.context, exc.problem) if part)
        raise ConfigError([ConfigProblem("", f"YAML syntax error: {what}", file, line)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigProblem("", f"YAML error: {exc}", file)]) from None
    if not isinstance(data, dict):
        doc.problem((), "the top level must be a mapping of sections")
        raise ConfigError(doc.problems)
    return data, doc


def _validate(model: type[M], data: Any, doc: _Document, base: Loc = ()) -> M:
    known = {p.path for p in doc.problems}
    found: list[tuple[Loc, str]] = []
    result: M | None = None
    try:
        result = model.model_validate(data)
    except ValidationError as exc:
        found = [
            (error["loc"], _MESSAGES.get(error["type"], error["msg"]))
            for error in exc.errors(include_input=False, include_url=False)
        ]
    except ConfigConsistencyError as exc:
        found = exc.problems
    for loc, message in found:
        # An unset ${VAR} also fails validation: say it once, the first way.
        if format_loc((*base, *loc)) not in known:
            doc.problem((*base, *loc), message)
    if doc.problems or result is None:
        raise ConfigError(doc.problems)
    return result


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            [ConfigProblem("", f"cannot read the file: {reason}", str(path))]
        ) from None


def parse_config(
    text: str, file: str = "config.yaml", env: Mapping[str, str] | None = None
) -> FleetConfig:
    data, doc = _parse(text, file, os.environ if env is None else env)
    return _validate(FleetConfig, data, doc)


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> FleetConfig:
    path = Path(path)
    return parse_config(_read(path), str(path), env)


def load_section(
    path: str | Path, section: str, model: type[M], env: Mapping[str, str] | None = None
) -> M:
    """Validate one top-level section only (``db upgrade`` must not depend on ``bots``)."""
    path = Path(path)
    data, doc = _parse(_read(path), str(path), os.environ if env is None else env)
    doc.problems = [
        p
        for p in doc.problems
        if p.path == section or p.path.startswith((f"{section}.", f"{section}["))
    ]
    return _validate(model, data.get(section, {}), doc, (section,))
