"""The registry of memory sources: each source module registers its class when imported.

``auto`` probes one ordered list once, before the first byte is written, and opens the first
usable source; when none is usable the error lists every source with its reason. There is no
fallback once bytes are out.
"""

from __future__ import annotations

import importlib
from typing import Callable, Dict, List, Optional, Tuple, Type

from memdump.errors import SourceUnavailable, UsageError
from memdump.host import Host
from memdump.sources.base import LIMITED, UNUSABLE, USABLE, DevMemory, Probe

_SOURCES: Dict[str, Type[DevMemory]] = {}
#: the order ``auto`` tries, physical memory and kernel memory (-k)
AUTO_PHYSICAL = ("kmod", "devmem", "kcore")
AUTO_KERNEL = ("kmem", "kcore")
#: where the sources shipped with memdump register themselves, imported only when one is asked
#: for (a dump pays for the sources it probes, not for all of them); a module that is absent
#: (a build without the emulator) takes its source out of the list
SOURCE_MODULES = {"kmod": "memdump.sources.kmod", "devmem": "memdump.sources.devmem",
                  "kmem": "memdump.sources.kmem", "kcore": "memdump.sources.kcore",
                  "emulator": "emulator.device"}


def register(cls: Type[DevMemory]) -> Type[DevMemory]:
    """Class decorator: make ``cls`` a source under ``cls.name``."""
    _SOURCES[cls.name] = cls
    return cls


def names() -> Tuple[str, ...]:
    """Every source: memdump's own in SOURCE_MODULES' order, then any registered besides."""
    return tuple(SOURCE_MODULES) + tuple(n for n in _SOURCES if n not in SOURCE_MODULES)


def _find(name: str) -> Optional[Type[DevMemory]]:
    """The class registered as ``name``, importing its module first if it ships with memdump;
    None when that module is absent."""
    if name not in _SOURCES and name in SOURCE_MODULES:
        module = SOURCE_MODULES[name]
        try:
            importlib.import_module(module)
        except ImportError as exc:
            absent = exc.name and (module == exc.name or module.startswith(exc.name + "."))
            if not absent:  # present but broken: that is a bug, not an absence
                raise
            return None
    return _SOURCES.get(name)


def source_class(name: str) -> Type[DevMemory]:
    cls = _find(name)
    if cls is not None:
        return cls
    if name in SOURCE_MODULES:
        raise UsageError(f"source {name!r} is not part of this build of memdump")
    raise UsageError(f"unknown source {name!r} (choose from auto, {', '.join(names())})")


def probe_all(host: Host, kernel: bool = False) -> List[Probe]:
    """Every source's verdict on ``host``."""
    probes = []
    for name in names():
        cls = _find(name)
        if cls is None:
            continue
        try:
            probes.append(cls.probe(host, kernel))
        except Exception as exc:  # a probe must never take the tool down; say what happened
            probes.append(cls.verdict(UNUSABLE, f"probe failed: {exc}"))
    return probes


def open_source(name: str, host: Host, kernel: bool = False,
                warn: Callable[[str], None] = lambda text: None) -> DevMemory:
    """Open ``name`` (or the first usable source for ``auto``) before any output is written."""
    if name == "auto":
        probes = []
        for candidate in AUTO_KERNEL if kernel else AUTO_PHYSICAL:
            cls = _find(candidate)
            if cls is None or not cls.automatic:
                continue
            probe = cls.probe(host, kernel)
            probes.append(probe)
            if probe.status is USABLE:
                warn(f"source {candidate}: {probe.reason}")
                return cls.open(host, kernel)
        lines = "; ".join(f"{p.source}: {p.reason}" for p in probes)
        raise SourceUnavailable("auto", f"no usable memory source ({lines})")
    cls = source_class(name)
    probe = cls.probe(host, kernel)
    if probe.status is UNUSABLE:
        raise SourceUnavailable(name, probe.reason)
    if probe.status is LIMITED:
        warn(f"warning: {name}: {probe.reason}")
    return cls.open(host, kernel)
