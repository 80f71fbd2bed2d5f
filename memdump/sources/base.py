"""The DevMemory interface: one small contract every memory source satisfies.

A source has a name, a side-effect-free probe that says whether it can run here and why not,
the sorted half-open ranges it will serve, and a read that returns bytes or raises HoleError
naming the address. Sources never pad silently: what they cannot read is an error the walker
records. A source also says what it knows of the machine (``machine_facts``) for formats that
record it.
"""

from __future__ import annotations

import abc
import enum
import errno
import os
from dataclasses import dataclass
from typing import ClassVar, List, Optional, Tuple

from memdump.errors import HoleError, SourceUnavailable
from memdump.facts import NO_FACTS, MachineFacts
from memdump.host import Host
from memdump.iomem import Range
from memdump.remarks import Remark, no_remark


class ProbeStatus(str, enum.Enum):
    """What a probe found. A str, so it prints and compares as its value."""

    USABLE = "usable"
    # Opens and reads, but the kernel restricts it (STRICT_DEVMEM): auto passes it over; an
    # explicit --source still runs it (with a warning), which is what --scan -s 1m on /dev/mem needs.
    LIMITED = "limited"
    UNUSABLE = "unusable"

    def __str__(self) -> str:
        return self.value


USABLE, LIMITED, UNUSABLE = ProbeStatus.USABLE, ProbeStatus.LIMITED, ProbeStatus.UNUSABLE


@dataclass(frozen=True)
class Hole:
    """``[start, end)`` could not be read (or is not served); ``reason`` says why."""

    start: int
    end: int
    reason: str


@dataclass(frozen=True)
class Probe:
    source: str
    status: ProbeStatus
    reason: str

    @property
    def usable(self) -> bool:
        return self.status is USABLE

    def line(self) -> str:
        return f"{self.source:<9} {self.status.value:<9} {self.reason}"


class DevMemory(abc.ABC):
    """A readable memory: physical addresses, or kernel virtual ones when ``kernel`` is true."""

    name: ClassVar[str]
    #: reads must start and be sized in multiples of this (1: any byte)
    granularity: int = 1
    #: ``auto`` may choose it (the emulator never is: it is not the machine being examined)
    automatic: ClassVar[bool] = True

    def __init__(self, host: Host, kernel: bool = False):
        self.host = host
        self.kernel = kernel

    # -- probing and opening (a probe has no side effects) -------------------------------------

    @classmethod
    def verdict(cls, status: ProbeStatus, reason: str) -> Probe:
        return Probe(cls.name, status, reason)

    @classmethod
    @abc.abstractmethod
    def probe(cls, host: Host, kernel: bool = False) -> Probe:
        """Say whether this source can run on ``host`` and, if not, why."""

    @classmethod
    def open(cls, host: Host, kernel: bool = False) -> "DevMemory":
        """The source for ``host`` (after its probe said it may run)."""
        return cls(host, kernel)

    # -- reading --------------------------------------------------------------------------------

    @abc.abstractmethod
    def ranges(self) -> List[Range]:
        """Sorted, non-overlapping, half-open ranges this source serves (RAM, never MMIO)."""

    @abc.abstractmethod
    def readinto(self, address: int, view: memoryview) -> int:
        """Read up to ``len(view)`` bytes at ``address``.

        Returns the count (short counts allowed; 0 means end of the device) or raises HoleError.
        """

    def unserved(self) -> List[Hole]:
        """RAM the machine publishes that this source cannot serve at all (so no walk reads it):
        the manifest accounts for it. Most sources serve all of it."""
        return []

    def scan_end(self) -> int:
        """First address beyond anything a blind scan (``--scan``) may read; bounds the walk."""
        ranges = self.ranges()
        return ranges[-1].end if ranges else 0

    def zero_copy(self, address: int) -> Optional[Tuple[int, int]]:
        """``(fd, file offset)`` to splice ``address`` from, or None when only reads work."""
        return None

    def machine_facts(self, remark: Remark = no_remark) -> MachineFacts:
        """VMCOREINFO and the direct map's base for the memory this source reads, where it can
        find them (an ELF core records them). Nothing known by default."""
        return NO_FACTS

    def read(self, address: int, size: int) -> bytes:
        """Read exactly ``size`` bytes or raise HoleError (for callers that want all or nothing)."""
        buffer = bytearray(size)
        view = memoryview(buffer)
        done = 0
        while done < size:
            try:
                count = self.readinto(address + done, view[done:])
            except InterruptedError:
                continue
            if count == 0:
                raise HoleError(self.name, address + done, errno.EFAULT, "end of device")
            done += count
        return bytes(buffer)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class FileDevMemory(DevMemory):
    """A source backed by a file or device node whose offset is the address (``/dev/mem`` style)."""

    path: ClassVar[str]
    #: whether the node can splice (sendfile) at all; a driver without splice_read cannot
    splices: ClassVar[bool] = True

    def __init__(self, host: Host, kernel: bool = False):
        super().__init__(host, kernel)
        self.filename = host.path(self.path)
        try:
            self.fd = os.open(self.filename, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise SourceUnavailable(self.name, f"cannot open {self.path}: {exc.strerror}") from None
        self._zero_copy = self.splices

    def readinto(self, address: int, view: memoryview) -> int:
        try:
            return os.preadv(self.fd, [view], self.file_offset(address))
        except InterruptedError:
            raise
        except OSError as exc:
            raise HoleError(self.name, address, exc.errno or errno.EIO) from None

    def file_offset(self, address: int) -> int:
        return address

    def zero_copy(self, address: int) -> Optional[Tuple[int, int]]:
        return (self.fd, self.file_offset(address)) if self._zero_copy else None

    def disable_zero_copy(self) -> None:
        """Read from now on (a caller that knows the node refuses splice)."""
        self._zero_copy = False

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def open_failure(path: str, exc: OSError) -> str:
    """Why ``path`` would not open, in the responder's terms."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"cannot open {path}: permission denied (needs root with CAP_SYS_RAWIO)"
    return f"cannot open {path}: {exc.strerror}"


def iomem_ram(host: Host, source: str) -> List[Range]:
    """System RAM ranges from the host's /proc/iomem, or SourceUnavailable saying why not."""
    iomem = host.iomem()
    if iomem is None:
        raise SourceUnavailable(source, "cannot read /proc/iomem")
    if iomem.addresses_hidden:
        raise SourceUnavailable(
            source, "/proc/iomem shows zero addresses: reading it needs CAP_SYS_ADMIN (run as root)")
    ranges = iomem.ram_ranges()
    if not ranges:
        raise SourceUnavailable(source, "/proc/iomem lists no System RAM")
    return ranges
