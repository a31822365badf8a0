"""Stage packages that load their modules on first use (PEP 562).

A package names where each of its public names lives; the module is imported the first time
the name is asked for, so importing one module of a stage does not load the others and the
heavy libraries they need (commands start fast). A public name must not also be the name of
one of the package's modules: importing that module would replace the name on the package.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(package: str, home: Mapping[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """The package's module-level `__getattr__`: `home` maps a public name to its module."""

    def __getattr__(name: str) -> Any:
        if name not in home:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home[name]), name)
        namespace[name] = value  # asked for once: later lookups are plain attribute reads
        return value

    return __getattr__
