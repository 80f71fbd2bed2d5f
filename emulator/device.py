"""The emulated machine served in-process as a memdump DevMemory, with the kernel's behaviours.

Two behaviours:

* ``module`` (default) -- what memdump's kernel module does: byte-granular System RAM; a read that
  starts in a hole fails (ENXIO), one that runs into a hole returns a short count; reads at or
  past the end of the last RAM range return 0 (end of device).
* ``strict-devmem`` -- what ``/dev/mem`` does under CONFIG_STRICT_DEVMEM: RAM pages in the first
  MiB read as zeros and firmware pages there read as they are; RAM above 1 MiB fails with EPERM,
  anything else above 1 MiB with EFAULT; one refused page fails the whole read; never an EOF.

Faults to inject: pages that fail with EIO, short reads at page boundaries, EINTR.
"""

from __future__ import annotations

import errno
import os

from memdump.errors import HoleError
from memdump.facts import NO_FACTS, MachineFacts
from memdump.host import Host
from memdump.iomem import Range, merge_ranges
from memdump.remarks import Remark, no_remark
from memdump.sources.base import USABLE, DevMemory, Probe
from memdump.sources.kcore import host_facts
from memdump.sources.registry import register
from emulator.faults import Faults
from emulator.machine import ONE_MIB, ROM_TAG, Machine
from emulator.truth import TRUTH, load_truth

BEHAVIOURS = ("module", "strict-devmem")


@register
class EmulatedMemory(DevMemory):
    name = "emulator"
    automatic = False  # a made-up machine: only ever chosen by name

    def __init__(self, host: Host | None = None, kernel: bool = False, *, machine: Machine | None = None,
                 behaviour: str = "module", faults: Faults | None = None, granularity: int = 1):
        super().__init__(host or Host(), kernel)
        if behaviour not in BEHAVIOURS:
            raise ValueError(f"unknown behaviour {behaviour!r}")
        self.machine = machine or Machine()
        self.behaviour = behaviour
        self.faults = faults or Faults()
        self.page_size = self.machine.page_size
        # a device that only takes aligned reads (as O_DIRECT-style devices do): tests -b checks
        self.granularity = granularity
        self.reads = 0
        self._kernel_map = self._kernel_mappings() if kernel else []

    @classmethod
    def probe(cls, host: Host, kernel: bool = False) -> Probe:
        return Probe(cls.name, USABLE, "always available; chosen only with --source emulator")

    @classmethod
    def open(cls, host: Host, kernel: bool = False) -> "EmulatedMemory":
        """``--source emulator``: the machine a ``--root`` was written from, else the built-in one."""
        if host.root != "/" and os.path.exists(os.path.join(host.root, TRUTH)):
            machine, truth = load_truth(host.root)
            return cls(host, kernel, machine=machine, behaviour=truth["behaviour"],
                       faults=Faults.from_dict(truth["faults"]),
                       granularity=truth.get("granularity", 1))
        return cls(host, kernel)

    def machine_facts(self, remark: Remark = no_remark) -> MachineFacts:
        """Under a fake root, what its proc/kcore says (the root was written from this machine);
        the real root's files describe the real machine, not this one."""
        return NO_FACTS if self.host.root == "/" else host_facts(self, remark)

    # -- layout -----------------------------------------------------------------------------------

    def ranges(self) -> list[Range]:
        if self.kernel:
            return merge_ranges(Range(start, end) for start, end, _ in self._kernel_map)
        return list(self.machine.ram)

    def scan_end(self) -> int:
        if self.kernel:
            return self.ranges()[-1].end
        return self.machine.address_space_end

    def _kernel_mappings(self) -> list[tuple[int, int, int | None]]:
        """(vaddr start, vaddr end, physical start or None for the modules area)."""
        found = []
        for kind, vaddr, paddr, size in self.machine.kcore_segments():
            if kind == "vmalloc":
                continue  # tens of TiB of mostly nothing: memdump leaves it out of -k too
            found.append((vaddr, vaddr + size, paddr))
        return sorted(found)

    # -- reading ----------------------------------------------------------------------------------

    def readinto(self, address: int, view: memoryview) -> int:
        self.reads += 1
        if self.faults.eintr_every and self.reads % self.faults.eintr_every == 0:
            raise InterruptedError(errno.EINTR, "Interrupted system call")
        if len(view) == 0:
            return 0
        if address % self.granularity or len(view) % self.granularity:
            raise HoleError(self.name, address, errno.EINVAL, f"reads must be {self.granularity}-byte aligned")
        if self.kernel:
            data = self._read_kernel(address, len(view))
        elif self.behaviour == "strict-devmem":
            data = self._read_strict(address, len(view))
        else:
            data = self._read_module(address, len(view))
        view[:len(data)] = data
        return len(data)

    def _page(self, address: int) -> int:
        return address - address % self.page_size

    def _next_page(self, address: int) -> int:
        return self._page(address) + self.page_size

    def _clip_faults(self, address: int, end: int) -> int:
        """Shorten ``[address, end)`` at the first EIO page after the first, and inject short reads."""
        boundary = self._next_page(address)
        while boundary < end:
            if boundary in self.faults.eio_pages:
                end = boundary
                break
            boundary += self.page_size
        if self.faults.short_every and self.reads % self.faults.short_every == 0:
            end = min(end, self._next_page(address))
        return end

    def _read_module(self, address: int, size: int) -> bytes:
        machine = self.machine
        if address >= machine.ram[-1].end:
            return b""
        r = machine.ram_range_at(address)
        if r is None:
            raise HoleError(self.name, address, errno.ENXIO, "not System RAM")
        if self._page(address) in self.faults.eio_pages:
            raise HoleError(self.name, address, errno.EIO, "page failed (injected)")
        end = self._clip_faults(address, min(address + size, r.end))
        return machine.contents(address, end)

    def _read_strict(self, address: int, size: int) -> bytes:
        machine = self.machine
        end = address + size
        page = self._page(address)
        while page < end:
            failure = self._strict_refusal(page)
            if failure:
                raise HoleError(self.name, address, failure)
            page += self.page_size
        end = self._clip_faults(address, end)
        parts = []
        page = self._page(address)
        while page < end:
            lo, hi = max(page, address), min(page + self.page_size, end)
            if self._whole_ram_page(page):
                parts.append(bytes(hi - lo))  # STRICT_DEVMEM shows low RAM as zeros
            else:
                parts.append(machine.contents(lo, hi, ROM_TAG))
            page += self.page_size
        return b"".join(parts)

    def _whole_ram_page(self, page: int) -> bool:
        r = self.machine.ram_range_at(page)
        return r is not None and page + self.page_size <= r.end

    def _strict_refusal(self, page: int) -> int:
        if page >= self.machine.address_space_end:
            return errno.EFAULT
        if page in self.faults.eio_pages:
            return errno.EIO
        if page < ONE_MIB:
            return 0
        return errno.EPERM if self._whole_ram_page(page) else errno.EFAULT

    def _read_kernel(self, address: int, size: int) -> bytes:
        for start, end, paddr in self._kernel_map:
            if start <= address < end:
                stop = min(address + size, end)
                if paddr is None:
                    area = self.machine.module_area()
                    return area[address - start:stop - start]
                physical = paddr + address - start
                return self.machine.contents(physical, physical + stop - address)
        raise HoleError(self.name, address, errno.EFAULT, "not mapped")
