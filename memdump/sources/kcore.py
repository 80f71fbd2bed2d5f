"""``/proc/kcore``: the kernel's own ELF core view of memory.

Physical RAM comes through the PT_LOAD segments whose ``p_paddr`` is real (kernels >= 4.11);
``p_paddr == -1`` marks vmalloc, modules and vmemmap, which are not RAM. Before 4.11 every
``p_paddr`` is 0 and the physical address is derived from the direct map, whose base is found by
matching segments against /proc/iomem's RAM. With ``-k`` the same file serves the kernel's virtual
map: text, direct map and the smaller areas (modules, vmemmap); the vmalloc area (tens of TiB,
nearly all unmapped) is left out. Unmapped pages read as zeros there, not as errors.
"""

from __future__ import annotations

import bisect
import errno
import os
from collections import Counter
from dataclasses import dataclass

from memdump import elf64
from memdump.errors import HoleError, MemdumpError, SourceUnavailable
from memdump.facts import MachineFacts
from memdump.host import Host
from memdump.iomem import Range, intersect_ranges, merge_ranges, subtract_ranges
from memdump.remarks import Remark, no_remark
from memdump.sources.base import UNUSABLE, USABLE, DevMemory, Hole, Probe, open_failure
from memdump.sources.registry import register

KCORE = "/proc/kcore"
SYS_VMCOREINFO = "/sys/kernel/vmcoreinfo"
# Virtual areas larger than this (the vmalloc area) are not dumped with -k: they are mostly holes.
KERNEL_AREA_LIMIT = 64 << 30


@dataclass(frozen=True)
class Mapping:
    """``[start, end)`` in the chosen address space, found at ``offset`` in the kcore file."""

    start: int
    end: int
    offset: int


class KcoreLayout:
    def __init__(self, segments: list[elf64.Segment], notes: list[elf64.Note], ram: list[Range] | None):
        self.loads = [s for s in segments if s.type == elf64.PT_LOAD and s.memsz]
        self.notes = notes
        self.ram = ram
        self.derived_paddr = False
        self.paddrs = self._physical_addresses()

    @classmethod
    def load(cls, host: Host, source: str = "kcore") -> "KcoreLayout":
        try:
            fd = os.open(host.path(KCORE), os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise SourceUnavailable(source, open_failure(KCORE, exc)) from None
        try:
            return cls.from_fd(fd, host, source)
        finally:
            os.close(fd)

    @classmethod
    def from_fd(cls, fd: int, host: Host, source: str = "kcore") -> "KcoreLayout":
        read_at = lambda offset, size: os.pread(fd, size, offset)  # noqa: E731
        try:
            header = read_at(0, elf64.EHDR.size)
            e_type, _machine, phoff, phnum = elf64.parse_header(header)
            if e_type != elf64.ET_CORE:
                raise elf64.ElfFormatError(0x10, "not an ELF core file")
            segments = elf64.read_segments(read_at, phoff, phnum)
        except elf64.ElfFormatError as exc:
            raise SourceUnavailable(source, f"{KCORE} at offset {exc.offset:#x}: {exc}") from None
        except OSError as exc:
            raise SourceUnavailable(source, f"cannot read {KCORE}: {exc.strerror}") from None
        notes: list[elf64.Note] = []
        for seg in segments:
            if seg.type == elf64.PT_NOTE and seg.filesz:
                try:
                    notes += elf64.parse_notes(read_at(seg.offset, seg.filesz))
                except OSError:
                    pass
        iomem = host.iomem()
        ram = iomem.ram_ranges() if iomem and iomem.resources and not iomem.addresses_hidden else None
        return cls(segments, notes, ram)

    def _physical_addresses(self) -> list[int | None]:
        """Each load segment's physical start, or None when it is not RAM."""
        if any(s.paddr not in (0, elf64.NO_PADDR) for s in self.loads):
            return [None if s.paddr == elf64.NO_PADDR else s.paddr for s in self.loads]
        # Before 4.11: every p_paddr is 0. Find the direct map's base: the offset that lands the
        # most segments exactly on page-aligned RAM ranges.
        if not self.ram:
            return [None] * len(self.loads)
        votes: Counter[int] = Counter()
        for seg in self.loads:
            for r in self.ram:
                start = r.start & ~0xFFF
                if seg.memsz in (r.size, ((r.end + 0xFFF) & ~0xFFF) - start, (r.end & ~0xFFF) - start):
                    votes[seg.vaddr - start] += 1
        if not votes:
            return [None] * len(self.loads)
        base = votes.most_common(1)[0][0]
        self.derived_paddr = True
        result: list[int | None] = []
        for seg in self.loads:
            paddr = seg.vaddr - base
            inside = any(r.start - 0x1000 < paddr < r.end for r in self.ram) if 0 <= paddr else False
            result.append(paddr if inside else None)
        return result

    def direct_map_base(self) -> int | None:
        """``vaddr - paddr`` of the direct map (for ELF output's p_vaddr), when it is known."""
        offsets = Counter(s.vaddr - p for s, p in zip(self.loads, self.paddrs) if p is not None)
        return offsets.most_common(1)[0][0] if offsets else None

    def physical_mappings(self) -> list[Mapping]:
        found = [Mapping(p, p + s.filesz, s.offset) for s, p in zip(self.loads, self.paddrs)
                 if p is not None and s.filesz]
        return sorted(found, key=lambda m: (m.start, -m.end))

    def physical_ranges(self) -> list[Range]:
        covered = merge_ranges(Range(m.start, m.end) for m in self.physical_mappings())
        return intersect_ranges(covered, self.ram) if self.ram else covered

    def kernel_mappings(self) -> list[Mapping]:
        found = [Mapping(s.vaddr, s.vaddr + s.filesz, s.offset)
                 for s, p in zip(self.loads, self.paddrs)
                 if s.filesz and (p is not None or s.memsz <= KERNEL_AREA_LIMIT)]
        return sorted(found, key=lambda m: (m.start, -m.end))

    def kernel_ranges(self) -> list[Range]:
        return merge_ranges(Range(m.start, m.end) for m in self.kernel_mappings())

    def vmcoreinfo(self) -> bytes | None:
        for note in self.notes:
            if note.name == b"VMCOREINFO":
                return note.desc
        return None


def vmcoreinfo_from_memory(source: DevMemory, text: str) -> bytes:
    """Read the note /sys/kernel/vmcoreinfo points at ("<hex paddr> <hex size>") through the
    source and return its VMCOREINFO text."""
    fields = text.split()
    if len(fields) < 2:
        raise ValueError(f"{SYS_VMCOREINFO}: expected '<address> <size>', got {text.strip()!r}")
    address, size = int(fields[0], 16), int(fields[1], 16)
    if not 0 < size <= 1 << 20:
        raise ValueError(f"{SYS_VMCOREINFO}: implausible note size {size:#x}")
    page = 4096
    first = address - address % page
    last = -(-(address + size) // page) * page
    blob = source.read(first, last - first)[address - first:address - first + size]
    for note in elf64.parse_notes(blob):
        if note.name == b"VMCOREINFO":
            return note.desc
    raise ValueError(f"no VMCOREINFO note at {address:#x}")


def facts_from(layout: "KcoreLayout | None", source: DevMemory,
               remark: Remark = no_remark) -> MachineFacts:
    """The machine facts of the host ``source`` reads: VMCOREINFO and the direct map's base from
    /proc/kcore's ``layout``; VMCOREINFO otherwise through the source itself, at the address
    /sys/kernel/vmcoreinfo publishes."""
    vmcoreinfo = base = None
    origin: dict = {"vmcoreinfo": None}
    if layout is not None:
        vmcoreinfo = layout.vmcoreinfo()
        base = layout.direct_map_base()
        if vmcoreinfo is not None:
            origin["vmcoreinfo"] = KCORE
    if vmcoreinfo is None:
        text = source.host.read_text(SYS_VMCOREINFO)
        if text:
            try:
                vmcoreinfo = vmcoreinfo_from_memory(source, text)
                origin["vmcoreinfo"] = SYS_VMCOREINFO
            except (MemdumpError, ValueError) as exc:
                remark(1, f"VMCOREINFO not recorded: {exc}")
    return MachineFacts(vmcoreinfo, base, origin)


def host_facts(source: DevMemory, remark: Remark = no_remark) -> MachineFacts:
    """``facts_from`` the host's own /proc/kcore, for sources that read the host's RAM by other
    means (a device whose offset is the physical address)."""
    try:
        layout: "KcoreLayout | None" = KcoreLayout.load(source.host, "kcore")
    except (SourceUnavailable, OSError) as exc:
        remark(1, f"no /proc/kcore for the direct map and VMCOREINFO: {exc}")
        layout = None
    return facts_from(layout, source, remark)


@register
class Kcore(DevMemory):
    name = "kcore"

    def __init__(self, host: Host, kernel: bool = False):
        super().__init__(host, kernel)
        self.layout = KcoreLayout.load(host, self.name)
        mappings = self.layout.kernel_mappings() if kernel else self.layout.physical_mappings()
        wanted = self.layout.kernel_ranges() if kernel else self.layout.physical_ranges()
        if not wanted:
            raise SourceUnavailable(self.name, f"{KCORE} has no segments for "
                                    + ("kernel memory" if kernel else "physical RAM"))
        self._ranges = wanted
        self._mappings = mappings
        self._starts = [m.start for m in mappings]
        self.fd = os.open(host.path(KCORE), os.O_RDONLY | os.O_CLOEXEC)

    @classmethod
    def probe(cls, host: Host, kernel: bool = False) -> Probe:
        if not host.exists(KCORE):
            return Probe(cls.name, UNUSABLE, f"no {KCORE} (kernel built without CONFIG_PROC_KCORE?)")
        if host.lockdown() == "confidentiality":
            return Probe(cls.name, UNUSABLE, f"kernel lockdown (confidentiality) blocks {KCORE}")
        try:
            layout = KcoreLayout.load(host, cls.name)
        except SourceUnavailable as exc:
            return Probe(cls.name, UNUSABLE, exc.reason)
        if kernel:
            ranges = layout.kernel_ranges()
            what = "kernel virtual"
        else:
            if layout.ram is None:
                if host.read_text("/proc/iomem") is None:
                    return Probe(cls.name, UNUSABLE, "cannot read /proc/iomem (the map of RAM)")
                return Probe(cls.name, UNUSABLE, "/proc/iomem shows zero addresses: reading it needs "
                             "CAP_SYS_ADMIN (run as root)")
            ranges = layout.physical_ranges()
            what = "physical RAM" + (" (addresses derived from the direct map)"
                                     if layout.derived_paddr else "")
        if not ranges:
            return Probe(cls.name, UNUSABLE, f"{KCORE} has no segments for {'kernel memory' if kernel else 'physical RAM'}")
        total = sum(r.size for r in ranges)
        return Probe(cls.name, USABLE, f"{len(ranges)} {what} ranges, {total >> 20} MiB")

    def ranges(self) -> list[Range]:
        return list(self._ranges)

    def unserved(self) -> list[Hole]:
        """System RAM kcore has no segment for: it publishes whole pages only, so the bytes of a
        range's partial last page (e.g. 0x9f000-0x9fc00) are out of reach."""
        if self.kernel or not self.layout.ram:
            return []
        return [Hole(r.start, r.end, "not published by /proc/kcore")
                for r in subtract_ranges(self.layout.ram, self._ranges)]

    def _locate(self, address: int) -> Mapping | None:
        # Few segments, and text overlaps the direct map physically: check every candidate.
        index = bisect.bisect_right(self._starts, address)
        for mapping in reversed(self._mappings[:index]):
            if address < mapping.end:
                return mapping
        return None

    def readinto(self, address: int, view: memoryview) -> int:
        mapping = self._locate(address)
        if mapping is None:
            raise HoleError(self.name, address, errno.EFAULT, "not in any kcore segment")
        want = min(len(view), mapping.end - address)
        try:
            return os.preadv(self.fd, [view[:want]], mapping.offset + address - mapping.start)
        except InterruptedError:
            raise
        except OSError as exc:
            raise HoleError(self.name, address, exc.errno or errno.EIO) from None

    def zero_copy(self, address: int) -> tuple[int, int] | None:
        # /proc files do not splice usefully and kcore pads unmapped pages: always read.
        return None

    def machine_facts(self, remark: Remark = no_remark) -> MachineFacts:
        return facts_from(self.layout, self, remark)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
