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
or a module built for this kernel release.  ``load_module``/``unload_module`` are for the CLI
(they only act on the live machine, never under a redirected root).
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess

from memdump.errors import SourceUnavailable
from memdump.host import Host
from memdump.sources.base import UNUSABLE, USABLE, PhysicalRamDevice, Probe, iomem_ram

DEVICE = "/dev/memdump"
MODULE = "memdump"
SYSFS = f"/sys/module/{MODULE}"


def module_file(host: Host) -> str | None:
    """Where an installed memdump.ko for the running release is (from modules.dep), if any."""
    release = host.kernel_release()
    text = host.read_text(f"/lib/modules/{release}/modules.dep")
    for line in (text or "").splitlines():
        path = line.split(":", 1)[0]
        name = os.path.basename(path)
        if name.split(".ko")[0] == MODULE:
            return f"/lib/modules/{release}/{path}"
    return None


def open_failure(exc: OSError) -> str:
    if exc.errno == errno.EOPNOTSUPP:
        return (f"cannot open {DEVICE}: this CPU has no machine-check-safe copy, so the module "
                "refuses by default (memdump module load PATH allow_unsafe_copy=1 accepts the risk)")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (f"cannot open {DEVICE}: permission denied (needs root with CAP_SYS_RAWIO; "
                "lockdown=confidentiality also refuses it)")
    return f"cannot open {DEVICE}: {exc.strerror}"


class KmodMemory(PhysicalRamDevice):
    name = "kmod"
    path = DEVICE

    def __init__(self, host: Host, kernel: bool = False):
        super().__init__(host, kernel)
        # the driver has no splice_read: sendfile/splice would fail, go straight to reads
        self._zero_copy = False

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
            if module_file(host):
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

    def zero_copy(self, address: int) -> tuple[int, int] | None:
        return None


def load_module(host: Host, path: str | None = None) -> str:
    """Load the module (``path``: a memdump.ko; default: the installed one via modprobe).

    Returns what was done, for a verbose remark; raises SourceUnavailable with the reason.
    """
    if host.root != "/":
        raise SourceUnavailable("kmod", "cannot load a module under a redirected --root")
    if os.path.exists(SYSFS):
        return f"module {MODULE} already loaded"
    command = ["insmod", path] if path else ["modprobe", MODULE]
    try:
        done = subprocess.run(command, capture_output=True, text=True)
    except OSError as exc:
        raise SourceUnavailable("kmod", f"{command[0]}: {exc.strerror}") from None
    if done.returncode:
        detail = done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        raise SourceUnavailable("kmod", f"{' '.join(command)} failed: {detail[0]}")
    return f"loaded {path or MODULE}"


def unload_module(host: Host) -> None:
    """Unload the module; fails (SourceUnavailable) while any reader holds the device open."""
    if host.root != "/" or not os.path.exists(SYSFS):
        return
    done = subprocess.run(["rmmod", MODULE], capture_output=True, text=True)
    if done.returncode:
        detail = done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        raise SourceUnavailable("kmod", f"rmmod {MODULE} failed: {detail[0]}")


__all__ = ["KmodMemory", "load_module", "unload_module", "module_file"]
