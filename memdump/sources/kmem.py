"""``/dev/kmem``: kernel virtual memory through the classic device (removed in Linux 5.13)."""

from __future__ import annotations

import os
from typing import List

from memdump.errors import SourceUnavailable
from memdump.host import Host
from memdump.iomem import Range
from memdump.sources.base import LIMITED, UNUSABLE, USABLE, FileDevMemory, Probe, open_failure
from memdump.sources.kcore import KcoreLayout
from memdump.sources.registry import register


@register
class KMem(FileDevMemory):
    """``/dev/kmem``: kernel virtual memory. Linux removed the device in 5.13."""

    name = "kmem"
    path = "/dev/kmem"

    def __init__(self, host: Host, kernel: bool = False):
        if not kernel:
            raise SourceUnavailable(self.name, "serves kernel virtual memory only (use -k)")
        super().__init__(host, kernel)
        try:
            self._ranges = kernel_ranges_from_kcore(host)
        except SourceUnavailable:
            self._ranges = []  # no map of kernel memory: only --scan can walk /dev/kmem

    @classmethod
    def probe(cls, host: Host, kernel: bool = False) -> Probe:
        if not kernel:
            return Probe(cls.name, UNUSABLE, "serves kernel virtual memory only (-k)")
        if not host.exists(cls.path):
            return Probe(cls.name, UNUSABLE,
                         f"no {cls.path}: removed in Linux 5.13 and off by default before; -k uses kcore")
        mode = host.lockdown()
        if mode:
            return Probe(cls.name, UNUSABLE, f"kernel lockdown ({mode}) blocks {cls.path}")
        try:
            os.close(os.open(host.path(cls.path), os.O_RDONLY | os.O_CLOEXEC))
        except OSError as exc:
            return Probe(cls.name, UNUSABLE, open_failure(cls.path, exc))
        try:
            kernel_ranges_from_kcore(host)
        except SourceUnavailable as exc:
            return Probe(cls.name, LIMITED, f"only --scan works: {exc.reason}")
        return Probe(cls.name, USABLE, "kernel virtual ranges from /proc/kcore's segments")

    def ranges(self) -> list[Range]:
        return list(self._ranges)

    def scan_end(self) -> int:
        return (1 << 64) - 1


def kernel_ranges_from_kcore(host: Host) -> List[Range]:
    """/dev/kmem has no map of its own: the kernel's virtual layout comes from /proc/kcore."""
    return KcoreLayout.load(host, "kmem").kernel_ranges()
