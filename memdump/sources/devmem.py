"""``/dev/mem``: physical memory through the classic device, limited to published System RAM."""

from __future__ import annotations

import errno
import os

from memdump.errors import HoleError, SourceUnavailable
from memdump.host import Host
from memdump.iomem import Range
from memdump.sources.base import LIMITED, UNUSABLE, USABLE, FileDevMemory, PhysicalRamDevice, Probe, iomem_ram

ONE_MIB = 1 << 20


def open_failure(path: str, exc: OSError) -> str:
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"cannot open {path}: permission denied (needs root with CAP_SYS_RAWIO)"
    return f"cannot open {path}: {exc.strerror}"


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
        from memdump.iomem import Iomem

        text = self.host.read_text("/proc/iomem")
        ends = [r.end for r in Iomem.parse(text).walk()] if text else []
        return max(ends + [self._ram[-1].end])


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


def kernel_ranges_from_kcore(host: Host) -> list[Range]:
    """/dev/kmem has no map of its own: the kernel's virtual layout comes from /proc/kcore."""
    from memdump.sources.kcore import KcoreLayout

    return KcoreLayout.load(host, "kmem").kernel_ranges()


__all__ = ["DevMem", "KMem", "HoleError"]
