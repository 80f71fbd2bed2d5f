"""``/dev/mem``: physical memory through the classic device, limited to published System RAM."""

from __future__ import annotations

import errno
import os

from memdump.errors import SourceUnavailable
from memdump.host import Host
from memdump.iomem import Range
from memdump.sources.base import LIMITED, UNUSABLE, USABLE, Probe, iomem_ram, open_failure
from memdump.sources.physical import PhysicalRamDevice
from memdump.sources.registry import register

ONE_MIB = 1 << 20


def strict_devmem_reason(host: Host, fd: int, ram: list[Range]) -> str | None:
    """Why the kernel's STRICT_DEVMEM rules will refuse RAM reads, or None when they won't.

    The configuration says so when it is published; a one-byte read of the first RAM page above
    1 MiB proves it (EPERM) when it is not. Reading /dev/mem changes nothing on the machine.
    """
    if host.kernel_config("STRICT_DEVMEM") == "y":
        return ("CONFIG_STRICT_DEVMEM=y: the kernel refuses RAM above 1 MiB (EPERM) and shows the "
                "first MiB's RAM as zeros; use --source kmod or kcore")
    above = [r for r in ram if r.end > ONE_MIB]
    if above:
        address = max(above[0].start, ONE_MIB)
        try:
            os.pread(fd, 1, address)
        except OSError as exc:
            if exc.errno == errno.EPERM:
                return (f"reading RAM at {address:#x} fails with EPERM: CONFIG_STRICT_DEVMEM is in "
                        "force; use --source kmod or kcore")
    return None


@register
class DevMem(PhysicalRamDevice):
    name = "devmem"
    path = "/dev/mem"

    @classmethod
    def probe(cls, host: Host, kernel: bool = False) -> Probe:
        verdict = cls.verdict
        if kernel:
            return verdict(UNUSABLE, "serves physical memory only; -k uses kmem or kcore")
        if not host.exists(cls.path):
            return verdict(UNUSABLE, f"no {cls.path} device (kernel built without CONFIG_DEVMEM?)")
        mode = host.lockdown()
        if mode:
            return verdict(UNUSABLE, f"kernel lockdown ({mode}) blocks {cls.path}")
        try:
            ram = iomem_ram(host, cls.name)
        except SourceUnavailable as exc:
            return verdict(UNUSABLE, exc.reason)
        try:
            fd = os.open(host.path(cls.path), os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            return verdict(UNUSABLE, open_failure(cls.path, exc))
        try:
            strict = strict_devmem_reason(host, fd, ram)
        finally:
            os.close(fd)
        if strict:
            return verdict(LIMITED, strict)
        total = sum(r.size for r in ram)
        return verdict(USABLE, f"{len(ram)} System RAM ranges, {total >> 20} MiB")

    def scan_end(self) -> int:
        """The end of the highest published resource, else of RAM: a blind scan stops there."""
        iomem = self.host.iomem()
        ends = [r.end for r in iomem.walk()] if iomem else []
        return max(ends + [self._ram[-1].end])
