"""Package attributes imported on first use (PEP 562), so importing a package loads only what is used."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any


def lazy_attributes(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package`, resolving each name in `exports` from its module.

    Args:
        package: The package's `__name__`.
        exports: Public name -> module that defines it, relative to `package` (".api").
    """

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name], package), name)
        setattr(sys.modules[package], name, value)  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *exports})

    return __getattr__, __dir__


def keep_exports_over_submodules(package: str, names: Iterable[str]) -> None:
    """Keep each of `names` bound to its export when `package` has a submodule of the same name.

    Importing `package.build_sam` binds the submodule to the package attribute
    `build_sam`, which would hide the exported function `build_sam` from then
    on. With this, the package attribute stays the export in either import
    order, as in `segment_anything` (whose `__init__` imports the function over
    its `build_sam` submodule); the submodule stays importable by name
    (`from package.build_sam import x`, `importlib.import_module`).

    Args:
        package: The package's `__name__`; its module object gets a `ModuleType` subclass.
        names: Exported names that are also submodule names.
    """
    shielded = {f"{package}.{name}": name for name in names}

    def __setattr__(self: ModuleType, name: str, value: Any) -> None:
        # The import system binds a freshly imported submodule to its parent: skip that binding only.
        if isinstance(value, ModuleType) and shielded.get(value.__name__) == name:
            return
        ModuleType.__setattr__(self, name, value)

    module = sys.modules[package]
    module.__class__ = type("ExportsFirstPackage", (ModuleType,), {"__setattr__": __setattr__, "__module__": __name__})
