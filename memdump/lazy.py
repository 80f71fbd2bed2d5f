"""Package faces whose names load on first use (PEP 562): ``import memdump`` must cost a dump's
start-up nothing, yet ``memdump.acquire`` must just work."""

from __future__ import annotations

import importlib
from typing import Any, Callable, Dict


def lazy_exports(package: str, namespace: Dict[str, Any], exports: Dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that imports ``exports[name]`` (a module path)
    on first use and keeps the value in ``namespace`` (the package's globals)."""
    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value
    return __getattr__
