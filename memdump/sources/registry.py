"""The registry of memory sources: each source module registers its class when imported.

``auto`` probes one ordered list once, before the first byte is written, and opens the first
usable source; when none is usable the error lists every source with its reason. There is no
fallback once bytes are out.
"""

from __future__ import annotations

import importlib
from typing import Callable, Dict, List, Tuple, Type

from memdump.errors import SourceUnavailable, UsageError
from memdump.host import Host
from memdump.sources.base import LIMITED, UNUSABLE, USABLE, DevMemory, Probe

_SOURCES: Dict[str, Type[DevMemory]] = {}
#: the order ``auto`` tries, physical memory and kernel memory (-k); only registered names count
AUTO_PHYSICAL = ("kmod", "devmem", "kcore")
AUTO_KERNEL = ("kmem", "kcore")
#: modules that register the sources shipped with memdump, imported on first use; a module that
#: is absent (a build without the emulator) is left out, and so are its sources
SOURCE_MODULES = ("memdump.sources.kmod", "memdump.sources.devmem", "memdump.sources.kmem",
                  "memdump.sources.kcore", "emulator.device")
_loaded = False


def register(cls: Type[DevMemory]) -> Type[DevMemory]:
    """Class decorator: make ``cls`` a source under ``cls.name``."""
    _SOURCES[cls.name] = cls
    return cls


def _load() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in SOURCE_MODULES:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                absent = exc.name and (module == exc.name or module.startswith(exc.name + "."))
                if not absent:  # present but broken: that is a bug, not an absence
                    raise


def _rank(name: str) -> int:
    """Sources shipped with memdump come in SOURCE_MODULES' order, others after them."""
    module = _SOURCES[name].__module__
    return SOURCE_MODULES.index(module) if module in SOURCE_MODULES else len(SOURCE_MODULES)


def names() -> Tuple[str, ...]:
    """Every registered source: memdump's own in SOURCE_MODULES' order, then the others in the
    order they registered."""
    _load()
    return tuple(sorted(_SOURCES, key=_rank))


def source_class(name: str) -> Type[DevMemory]:
    _load()
    try:
        return _SOURCES[name]
    except KeyError:
        raise UsageError(f"unknown source {name!r} (choose from auto, {', '.join(names())})") from None


def probe_all(host: Host, kernel: bool = False) -> List[Probe]:
    """Every source's verdict on ``host``."""
    probes = []
    for name in names():
        cls = _SOURCES[name]
        try:
            probes.append(cls.probe(host, kernel))
        except Exception as exc:  # a probe must never take the tool down; say what happened
            probes.append(cls.verdict(UNUSABLE, f"probe failed: {exc}"))
    return probes


def open_source(name: str, host: Host, kernel: bool = False,
                warn: Callable[[str], None] = lambda text: None) -> DevMemory:
    """Open ``name`` (or the first usable source for ``auto``) before any output is written."""
    if name == "auto":
        _load()
        probes = []
        for candidate in AUTO_KERNEL if kernel else AUTO_PHYSICAL:
            cls = _SOURCES.get(candidate)
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
