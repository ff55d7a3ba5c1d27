"""Imports point down through the tiers of DESIGN.md: a whitelist, checked on every import.

Every module of ours is placed in a tier (a module nobody placed fails the test:
place it on purpose). A module may import modules of lower tiers and of its own
tier, except that the tier-4 packages (handlers, middlewares, scheduler) are
siblings that never import each other. Besides: storage never imports aiogram,
and the emulator stands alone. Imports inside functions count too.

The tiers (DESIGN.md, "Layout"), with the modules added since in their place:

6 composition  fleet.cli, fleet.cli_payments, fleet.demo, fleet.demo_payments, fleet.demo_funnel,
               fleet.supervisor, fleet.services
5 runtime      fleet.runner, fleet.polling, fleet.pipeline, fleet.completion,
               fleet.dispatch, fleet.webhook, fleet.replays, fleet.leases,
               fleet.ownership, fleet.web, fleet.status, fleet.notify, fleet.embedded
4 edges        handlers/  middlewares/  scheduler/   (siblings)
3 services     fleet.sender, fleet.ratelimit, fleet.batcher, fleet.sequencer,
               fleet.payments, fleet.tracking, fleet.outbox, fleet.timers, fleet.sales
2 domain+data  storage/, migrations/, fleet.funnel, fleet.telegram, fleet.http,
               fleet.offsets, fleet.assignment
1 leaves       fleet (the package), fleet.config, fleet.config_base, fleet.config_funnel,
               fleet.config_file, fleet.context,
               fleet.metrics, fleet.errors, fleet.logs, fleet.lazytypes, fleet.money, fleet.lines
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("fleet", "handlers", "middlewares", "storage", "scheduler", "migrations")
SIBLINGS = ("handlers", "middlewares", "scheduler")
EMULATOR = "fleet.emulator"

TIERS: dict[str, int] = {
    "fleet.__main__": 6,
    "fleet.cli": 6,
    "fleet.cli_payments": 6,
    "fleet.demo": 6,
    "fleet.demo_payments": 6,
    "fleet.demo_funnel": 6,
    "fleet.supervisor": 6,
    "fleet.services": 6,
    "fleet.runner": 5,
    "fleet.polling": 5,
    "fleet.pipeline": 5,
    "fleet.completion": 5,
    "fleet.dispatch": 5,
    "fleet.webhook": 5,
    "fleet.replays": 5,
    "fleet.leases": 5,
    "fleet.ownership": 5,
    "fleet.web": 5,
    "fleet.status": 5,
    "fleet.notify": 5,
    "fleet.embedded": 5,
    "handlers": 4,
    "middlewares": 4,
    "scheduler": 4,
    "fleet.sender": 3,
    "fleet.ratelimit": 3,
    "fleet.batcher": 3,
    "fleet.sequencer": 3,
    "fleet.payments": 3,
    "fleet.outbox": 3,
    "fleet.timers": 3,
    "fleet.sales": 3,
    "fleet.tracking": 3,
    "storage": 2,
    "migrations": 2,
    "fleet.funnel": 2,
    "fleet.telegram": 2,
    "fleet.http": 2,
    "fleet.offsets": 2,
    "fleet.assignment": 2,
    "fleet": 1,  # the package itself: its version and fleet.lazytypes
    "fleet.config": 1,
    "fleet.config_base": 1,
    "fleet.config_funnel": 1,
    "fleet.config_file": 1,
    "fleet.context": 1,
    "fleet.metrics": 1,
    "fleet.errors": 1,
    "fleet.logs": 1,
    "fleet.lazytypes": 1,
    "fleet.money": 1,
    "fleet.lines": 1,
}


def tier_of(module: str) -> int | None:
    """The tier of the longest placed prefix (``storage.repositories.x`` -> storage)."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        tier = TIERS.get(".".join(parts[:end]))
        if tier is not None and (end > 1 or module == parts[0] or parts[0] != "fleet"):
            return tier
    return None


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
            if not _is(module, EMULATOR) and tier_of(module) is None:
                found.append(f"{module}: not placed in a tier (add it to TIERS)")
                continue
            for target in sorted(set(_imports(path, module))):
                rule = _rule_broken(module, target)
                if rule:
                    found.append(f"{module} imports {target}: {rule}")
    return sorted(found)


def _rule_broken(module: str, target: str) -> str | None:
    if _is(module, EMULATOR):
        ours = _is(target, *PACKAGES) and not _is(target, EMULATOR) and target != "fleet"
        return "the emulator stands alone (it plays Telegram, not us)" if ours else None
    if _is(module, "storage") and _is(target, "aiogram"):
        return "storage never imports aiogram"
    if not _is(target, *PACKAGES):
        return None  # the standard library and third parties
    if _is(target, EMULATOR):
        return (
            "only tests, the demo and the CLI drive the emulator"
            if not _is(
                module, "fleet.demo", "fleet.demo_payments", "fleet.demo_funnel", "fleet.cli"
            )
            else None
        )
    tier, target_tier = tier_of(module), tier_of(target)
    if target_tier is None:
        return None  # an attribute of a placed module ("from fleet import __version__")
    assert tier is not None
    if target_tier > tier:
        return f"tier {tier} may not import tier {target_tier} (imports point down)"
    top, target_top = module.split(".")[0], target.split(".")[0]
    if tier == 4 and target_tier == 4 and top != target_top:
        return f"{top} and {target_top} are siblings and never import each other"
    return None


def test_the_project_imports_point_one_way() -> None:
    assert violations(ROOT) == []


def test_wrong_arrows_are_caught(tmp_path: Path) -> None:
    files = {
        "fleet/__init__.py": "",
        "fleet/config.py": "from storage import models\n",
        "fleet/supervisor.py": "",
        "fleet/cli.py": "from fleet import supervisor\n",
        "fleet/gadget.py": "",
        "fleet/telegram.py": "from fleet.sender import Sender\n",
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
            "fleet.config imports storage: tier 1 may not import tier 2 (imports point down)",
            "fleet.config imports storage.models: tier 1 may not import tier 2"
            " (imports point down)",
            "fleet.gadget: not placed in a tier (add it to TIERS)",
            "fleet.telegram imports fleet.sender: tier 2 may not import tier 3"
            " (imports point down)",
            "fleet.telegram imports fleet.sender.Sender: tier 2 may not import tier 3"
            " (imports point down)",
            "handlers imports middlewares.dedup: "
            "handlers and middlewares are siblings and never import each other",
            "handlers imports middlewares.dedup.x: "
            "handlers and middlewares are siblings and never import each other",
            "middlewares imports fleet.supervisor: tier 4 may not import tier 6"
            " (imports point down)",
            "middlewares imports fleet.supervisor.Supervisor: tier 4 may not import tier 6"
            " (imports point down)",
            "storage imports aiogram.types: storage never imports aiogram",
            "storage imports fleet.runner: tier 2 may not import tier 5 (imports point down)",
            "storage.models imports handlers: tier 2 may not import tier 4 (imports point down)",
            "storage.models imports handlers.start: tier 2 may not import tier 4"
            " (imports point down)",
        ]
    )
