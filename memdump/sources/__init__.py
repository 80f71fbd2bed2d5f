"""The registry of memory sources and the ``auto`` choice.

``auto`` probes one ordered list once, before the first byte is written, and opens the first
usable source; when none is usable the error lists every source with its reason. There is no
fallback once bytes are out.
"""

from __future__ import annotations

import importlib
from typing import Callable

from memdump.errors import SourceUnavailable, UsageError
from memdump.host import Host
from memdump.sources.base import LIMITED, UNUSABLE, USABLE, DevMemory, Probe

# name -> "module:Class"; imported lazily so a broken optional source never breaks the others
_REGISTRY = {
    "kmod": "memdump.sources.kmod:KmodMemory",
    "devmem": "memdump.sources.devmem:DevMem",
    "kmem": "memdump.sources.devmem:KMem",
    "kcore": "memdump.sources.kcore:Kcore",
    "emulator": "emulator.device:EmulatedMemory",
}
NAMES = tuple(_REGISTRY)
AUTO_PHYSICAL = ("kmod", "devmem", "kcore")
AUTO_KERNEL = ("kmem", "kcore")


def source_class(name: str) -> type[DevMemory]:
    if name not in _REGISTRY:
        raise UsageError(f"unknown source {name!r} (choose from auto, {', '.join(NAMES)})")
    module, attr = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), attr)


def available_names() -> list[str]:
    """Sources whose code is present (kmod's Python side ships with the module's issue)."""
    found = []
    for name in NAMES:
        try:
            source_class(name)
        except ImportError:
            continue
        found.append(name)
    return found


def probe_all(host: Host, kernel: bool = False) -> list[Probe]:
    probes = []
    for name in available_names():
        cls = source_class(name)
        try:
            probes.append(cls.probe(host, kernel))
        except Exception as exc:  # a probe must never take the tool down; say what happened
            probes.append(Probe(name, UNUSABLE, f"probe failed: {exc}"))
    return probes


def _open(name: str, host: Host, kernel: bool) -> DevMemory:
    if name == "emulator":
        from emulator.device import from_host

        return from_host(host, kernel)
    return source_class(name)(host, kernel)


def open_source(name: str, host: Host, kernel: bool = False,
                warn: Callable[[str], None] = lambda text: None) -> DevMemory:
    """Open ``name`` (or the first usable source for ``auto``) before any output is written."""
    if name == "auto":
        order = AUTO_KERNEL if kernel else AUTO_PHYSICAL
        probes = []
        for candidate in order:
            try:
                probe = source_class(candidate).probe(host, kernel)
            except ImportError:
                continue
            probes.append(probe)
            if probe.status == USABLE:
                warn(f"source {candidate}: {probe.reason}")
                return _open(candidate, host, kernel)
        lines = "; ".join(f"{p.source}: {p.reason}" for p in probes)
        raise SourceUnavailable("auto", f"no usable memory source ({lines})")
    cls = source_class(name)
    if name != "emulator":
        probe = cls.probe(host, kernel)
        if probe.status == UNUSABLE:
            raise SourceUnavailable(name, probe.reason)
        if probe.status == LIMITED:
            warn(f"warning: {name}: {probe.reason}")
    return _open(name, host, kernel)


__all__ = ["NAMES", "Probe", "DevMemory", "open_source", "probe_all", "source_class", "USABLE",
           "LIMITED", "UNUSABLE"]
