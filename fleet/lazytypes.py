"""Build aiogram's pydantic types and methods when first used, not all ~900 at import.

aiogram declares its types with ``defer_build=True`` and then calls
``model_rebuild()`` on every one of them at the end of ``aiogram.types``,
which compiles every validator at once: about 85 MiB of RSS and 1.7 s of CPU
in every process, most of it for types a sales bot never receives. While that
module runs, :func:`defer_aiogram_types` makes those calls do nothing but keep
the namespace aiogram passes (every type by name). Once it has run, those
names are added to each ``aiogram.types.*`` module (they import one another
only for type checkers), so pydantic can resolve a type's annotations from its
own module whenever it builds it: on its first validation, or inside another
model (aiogram's ``Response[list[Update]]``), exactly as aiogram would have.
The ~170 method models (``SendMessage``...) are declared with ``defer_build``
the same way, and see the type names too: together 110 MiB less RSS per
process (165 to 55 MiB for ``import aiogram``).

It must run before anything imports ``aiogram``; ``fleet/__init__.py`` calls
it. If aiogram is already imported it does nothing (the types are built).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from pydantic import BaseModel

_TARGET = "aiogram.types"
_METHODS = "aiogram.methods"
_METHODS_BASE = "aiogram.methods.base"


_captured: dict[str, Any] = {}


def _record_namespace(
    cls: type[BaseModel],
    *,
    force: bool = False,
    raise_errors: bool = True,
    _parent_namespace_depth: int = 2,
    _types_namespace: Any = None,
) -> bool | None:
    """Stand-in for ``model_rebuild`` while ``aiogram.types`` runs: keep the names, build later."""
    if _types_namespace is None or force or cls.__pydantic_complete__:
        return _REBUILD(  # type: ignore[no-any-return]
            cls,
            force=force,
            raise_errors=raise_errors,
            _parent_namespace_depth=_parent_namespace_depth,
            _types_namespace=_types_namespace,
        )
    if not _captured:
        _captured.update(_types_namespace)
    return None


_REBUILD = BaseModel.model_rebuild.__func__  # type: ignore[attr-defined]


def _share_names(package: str) -> None:
    """Every aiogram type (and the typing names aiogram uses) visible in every module of
    ``package``: they import one another only for type checkers."""
    for name, module in list(sys.modules.items()):
        if module is not None and (name == package or name.startswith(package + ".")):
            namespace = vars(module)
            for key, value in _captured.items():
                namespace.setdefault(key, value)


class _DeferringLoader(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader, name: str) -> None:
        self._inner = inner
        self._name = name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        if self._name == _TARGET:
            BaseModel.model_rebuild = classmethod(_record_namespace)  # type: ignore[method-assign,assignment]
            try:
                self._inner.exec_module(module)
            finally:
                BaseModel.model_rebuild = classmethod(_REBUILD)  # type: ignore[method-assign,assignment]
            _share_names(_TARGET)
        elif self._name == _METHODS_BASE:
            self._inner.exec_module(module)
            # Every method model declared after this point is built on first use.
            module.TelegramMethod.model_config["defer_build"] = True
        else:
            self._inner.exec_module(module)
            _share_names(_METHODS)


class _Finder(importlib.abc.MetaPathFinder):
    def __init__(self) -> None:
        self._waiting = {_TARGET, _METHODS, _METHODS_BASE}

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self._waiting:
            return None
        self._waiting.discard(fullname)
        if not self._waiting:
            sys.meta_path.remove(self)
        spec = _real_spec(fullname, self)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _DeferringLoader(spec.loader, fullname)
        return spec


def _real_spec(fullname: str, finder: _Finder) -> importlib.machinery.ModuleSpec | None:
    """The spec the other finders give (this one stepping aside for the lookup)."""
    present = finder in sys.meta_path
    if present:
        sys.meta_path.remove(finder)
    try:
        return importlib.util.find_spec(fullname)
    finally:
        if present:
            sys.meta_path.insert(0, finder)


def defer_aiogram_types() -> None:
    """Install the import hook once (idempotent); a no-op once aiogram is imported."""
    if _TARGET in sys.modules or any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _Finder())
