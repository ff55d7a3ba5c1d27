"""Nothing connects to anything at import time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import importlib, pkgutil, socket, sys

def refuse(*args, **kwargs):
    raise AssertionError(f"network use at import time: {args!r}")

socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.create_connection = refuse

imported = 0
for package in ("fleet", "handlers", "middlewares", "storage", "scheduler", "migrations.runner"):
    module = importlib.import_module(package)
    imported += 1
    for info in pkgutil.walk_packages(getattr(module, "__path__", []), package + "."):
        if info.name in ("fleet.__main__",) or info.name.startswith("migrations."):
            continue
        importlib.import_module(info.name)
        imported += 1
print(imported)
"""


def test_importing_every_module_opens_no_connection() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) >= 15
