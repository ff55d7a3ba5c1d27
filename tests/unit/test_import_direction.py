"""Imports point one way (DESIGN.md): this walks every import and fails on a wrong arrow.

Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("fleet", "handlers", "middlewares", "storage", "scheduler", "migrations")
SIBLINGS = ("handlers", "middlewares", "scheduler")
# Leaves: anything may import them; they import only each other.
LEAVES = ("fleet.config", "fleet.config_file", "fleet.errors", "fleet.metrics", "fleet.logs")


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, module: str) -> Iterator[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield target
            # "from fleet import supervisor" imports the module fleet.supervisor.
            yield from (f"{target}.{alias.name}" for alias in node.names)


def _is(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def violations(root: Path) -> list[str]:
    found: list[str] = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            module = _module_name(path, root)
            top = module.split(".")[0]
            for target in set(_imports(path, module)):
                rule = _rule_broken(module, top, target)
                if rule:
                    found.append(f"{module} imports {target}: {rule}")
    return sorted(found)


def _rule_broken(module: str, top: str, target: str) -> str | None:
    if _is(target, "fleet.supervisor") and module not in (
        "fleet.cli",
        "fleet.demo",
        "fleet.supervisor",
    ):
        return "only the CLI (and its demo) may import the composition root"
    if _is(target, "fleet.cli") and module not in ("fleet.__main__", "fleet.cli"):
        return "nothing imports the CLI"
    if top in SIBLINGS:
        for other in SIBLINGS:
            if other != top and _is(target, other):
                return f"{top} and {other} are siblings and never import each other"
    if top == "storage":
        if _is(target, "aiogram"):
            return "storage never imports aiogram"
        if _is(target, *SIBLINGS, "migrations"):
            return "storage sits below handlers, middlewares and scheduler"
        if _is(target, "fleet") and not _is(target, *LEAVES) and target != "fleet":
            return "storage may import only fleet's leaf modules"
    ours = _is(target, *PACKAGES) and target != "fleet"
    if _is(module, *LEAVES) and ours and not _is(target, *LEAVES):
        return "leaf modules import only other leaves"
    if _is(module, "fleet.emulator") and ours and not _is(target, "fleet.emulator"):
        return "the emulator stands alone (it plays Telegram, not us)"
    return None


def test_the_project_imports_point_one_way() -> None:
    assert violations(ROOT) == []


def test_wrong_arrows_are_caught(tmp_path: Path) -> None:
    files = {
        "fleet/__init__.py": "",
        "fleet/config.py": "from storage import models\n",
        "fleet/supervisor.py": "",
        "fleet/cli.py": "from fleet import supervisor\n",
        "handlers/__init__.py": "def f():\n    from middlewares.dedup import x\n",
        "middlewares/__init__.py": "from fleet.supervisor import Supervisor\n",
        "storage/__init__.py": "import aiogram.types\nfrom fleet import runner\n",
        "storage/models.py": "from ..handlers import start\n",
        "scheduler/__init__.py": "from fleet.config import FleetConfig\n",
        "migrations/__init__.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert violations(tmp_path) == sorted(
        [
            "fleet.config imports storage: leaf modules import only other leaves",
            "fleet.config imports storage.models: leaf modules import only other leaves",
            "handlers imports middlewares.dedup: "
            "handlers and middlewares are siblings and never import each other",
            "handlers imports middlewares.dedup.x: "
            "handlers and middlewares are siblings and never import each other",
            "middlewares imports fleet.supervisor: "
            "only the CLI (and its demo) may import the composition root",
            "middlewares imports fleet.supervisor.Supervisor: "
            "only the CLI (and its demo) may import the composition root",
            "storage imports aiogram.types: storage never imports aiogram",
            "storage imports fleet.runner: storage may import only fleet's leaf modules",
            "storage.models imports handlers: "
            "storage sits below handlers, middlewares and scheduler",
            "storage.models imports handlers.start: "
            "storage sits below handlers, middlewares and scheduler",
        ]
    )
