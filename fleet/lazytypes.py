"""Build aiogram's pydantic types when first used, not all ~700 at import.

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


def _share_names() -> None:
    """Every aiogram type (and the typing names aiogram uses) visible in every types module."""
    for name, module in list(sys.modules.items()):
        if module is not None and (name == _TARGET or name.startswith(_TARGET + ".")):
            namespace = vars(module)
            for key, value in _captured.items():
                namespace.setdefault(key, value)


class _DeferringLoader(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader) -> None:
        self._inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        BaseModel.model_rebuild = classmethod(_record_namespace)  # type: ignore[method-assign,assignment]
        try:
            self._inner.exec_module(module)
        finally:
            BaseModel.model_rebuild = classmethod(_REBUILD)  # type: ignore[method-assign,assignment]
        _share_names()


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != _TARGET:
            return None
        sys.meta_path.remove(self)  # once; and so that the lookup below finds the real spec
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _DeferringLoader(spec.loader)
        return spec


def defer_aiogram_types() -> None:
    """Install the import hook once (idempotent); a no-op once aiogram is imported."""
    if _TARGET in sys.modules or any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _Finder())
