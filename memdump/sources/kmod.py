"""``/dev/memdump``: physical RAM through memdump's own kernel module (``kmod/``).

The module works where ``/dev/mem`` does not (``CONFIG_STRICT_DEVMEM``): it serves System RAM
only, read-only, the file offset being the physical address.  Its read(2) contract:

- a read that starts in a hole (not System RAM) fails with ENXIO; one that starts in a RAM page
  the kernel says must not be touched (offline, hardware-poisoned, ballooned, unaccepted, not in
  the direct map) or that hits a machine check fails with EIO;
- a read that runs into either returns the bytes before it (a short count);
- at or beyond the end of the highest RAM range a read returns 0 (end of file);
- at most 2 MiB per call; the device does not splice (no zero-copy).

The probe says what is missing when the source cannot run: the device node, the loaded module,
or a module built for this kernel release (building and loading it is ``memdump.module``'s).
"""

from __future__ import annotations

import errno
import os
import stat

from memdump.errors import SourceUnavailable
from memdump.host import Host
from memdump.module.names import DEVICE, MODULE, SYSFS, installed_module
from memdump.sources.base import UNUSABLE, USABLE, Probe, iomem_ram
from memdump.sources.physical import PhysicalRamDevice
from memdump.sources.registry import register


def open_failure(exc: OSError) -> str:
    if exc.errno == errno.EOPNOTSUPP:
        return (f"cannot open {DEVICE}: this CPU has no machine-check-safe copy, so the module "
                "refuses by default (memdump module load PATH allow_unsafe_copy=1 accepts the risk)")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (f"cannot open {DEVICE}: permission denied (needs root with CAP_SYS_RAWIO; "
                "lockdown=confidentiality also refuses it)")
    return f"cannot open {DEVICE}: {exc.strerror}"


@register
class KmodMemory(PhysicalRamDevice):
    name = "kmod"
    path = DEVICE
    # the driver has no splice_read: sendfile/splice would fail, go straight to reads
    splices = False

    @classmethod
    def probe(cls, host: Host, kernel: bool = False) -> Probe:
        verdict = cls.verdict
        if kernel:
            return verdict(UNUSABLE, "serves physical memory only; -k uses kmem or kcore")
        loaded = host.exists(SYSFS)
        if not host.exists(DEVICE):
            release = host.kernel_release()
            if loaded:
                return verdict(UNUSABLE, f"module {MODULE} is loaded but {DEVICE} is missing "
                                         "(no devtmpfs or udev?)")
            if installed_module(host):
                return verdict(UNUSABLE, f"module {MODULE} is not loaded (memdump module load, or "
                                         f"--load-module for one dump)")
            return verdict(UNUSABLE, f"module {MODULE} is not loaded and none is installed for "
                                     f"{release} (memdump module build, then memdump module load)")
        try:
            mode = os.stat(host.path(DEVICE)).st_mode
        except OSError as exc:
            return verdict(UNUSABLE, f"cannot stat {DEVICE}: {exc.strerror}")
        # a character device on a live system; a plain file stands in for it in emulated roots
        if not (stat.S_ISCHR(mode) or stat.S_ISREG(mode)):
            return verdict(UNUSABLE, f"{DEVICE} is not a character device")
        if host.lockdown() == "confidentiality":
            return verdict(UNUSABLE, "kernel lockdown (confidentiality) blocks reading RAM")
        try:
            ram = iomem_ram(host, cls.name)
        except SourceUnavailable as exc:
            return verdict(UNUSABLE, exc.reason)
        try:
            os.close(os.open(host.path(DEVICE), os.O_RDONLY | os.O_CLOEXEC))
        except OSError as exc:
            return verdict(UNUSABLE, open_failure(exc))
        version = (host.read_text(f"{SYSFS}/version") or "").strip()
        total = sum(r.size for r in ram)
        return verdict(USABLE, f"{MODULE}.ko{' ' + version if version else ''}: "
                               f"{len(ram)} System RAM ranges, {total >> 20} MiB")
