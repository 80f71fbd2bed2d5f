"""The emulated machine: an x86-like physical layout generated from a seed, and its RAM contents.

Every page's bytes start with a header naming the machine and the page's physical address, so a
page written at the wrong place, twice or not at all is caught by any comparison with the truth.
"""

from __future__ import annotations

import hashlib
import random
import struct
from dataclasses import dataclass, field

from memdump.iomem import Iomem, Range, Resource

PAGE = 4096
ONE_MIB = 1 << 20
DIRECT_MAP_BASE = 0xFFFF888000000000
KERNEL_TEXT_BASE = 0xFFFFFFFF81000000
MODULES_BASE = 0xFFFFFFFFA0000000
VMALLOC_BASE = 0xFFFFC90000000000
POOL_SIZE = 1 << 20
RAM_TAG = b"EMU-RAM\0"
ROM_TAG = b"EMU-ROM\0"
HEADER = struct.Struct("<8sQQQ")  # tag, physical address, seed, a checksum of the three


def random_bytes(rng: random.Random, size: int) -> bytes:
    """``rng.randbytes(size)`` on every Python (3.9 added it; the same bytes for the same state)."""
    return rng.getrandbits(size * 8).to_bytes(size, "little") if size else b""


@dataclass
class Machine:
    """A machine from ``seed`` with about ``ram_size`` bytes of RAM (the truth says exactly)."""

    seed: int = 1
    ram_size: int = 64 * ONE_MIB
    page_size: int = PAGE
    release: str = "6.1.0-emulated"
    iomem: Iomem = field(init=False)
    ram: list[Range] = field(init=False)
    kaslr_slide: int = field(init=False)

    def __post_init__(self):
        if self.ram_size < 4 * ONE_MIB:
            raise ValueError("the emulator needs at least 4 MiB of RAM")
        rng = random.Random(self.seed)
        self.iomem = Iomem(_layout(rng, self.ram_size))
        self.ram = self.iomem.ram_ranges()
        self.kaslr_slide = rng.randrange(0, 64) * (2 << 20)
        self._pool = random_bytes(random.Random(self.seed ^ 0x5EED), POOL_SIZE + PAGE)
        self._modules: bytes | None = None

    # -- layout facts -----------------------------------------------------------------------------

    @property
    def ram_bytes(self) -> int:
        return sum(r.size for r in self.ram)

    @property
    def address_space_end(self) -> int:
        return max(r.end for r in self.iomem.walk())

    def kernel_code(self) -> Range:
        return self.iomem.find("Kernel code")[0]

    def is_ram(self, address: int) -> bool:
        return any(r.start <= address < r.end for r in self.ram)

    def ram_range_at(self, address: int) -> Range | None:
        for r in self.ram:
            if r.start <= address < r.end:
                return r
        return None

    # -- contents ---------------------------------------------------------------------------------

    def page(self, page_address: int, tag: bytes = RAM_TAG) -> bytes:
        """The full page at ``page_address`` as the truth has it (RAM pages; ROM uses ROM_TAG)."""
        check = (page_address * 0x9E3779B97F4A7C15 + self.seed) & 0xFFFFFFFFFFFFFFFF
        header = HEADER.pack(tag, page_address, self.seed, check)
        offset = (check >> 7) % POOL_SIZE
        return header + self._pool[offset:offset + self.page_size - HEADER.size]

    def contents(self, start: int, end: int, tag: bytes = RAM_TAG) -> bytes:
        """Page contents for any span, RAM or not (callers decide what is readable)."""
        if start >= end:
            return b""
        first = start - start % self.page_size
        pages = [self.page(a, tag) for a in range(first, end, self.page_size)]
        blob = b"".join(pages)
        return blob[start - first:end - first]

    def truth_ram_image(self) -> bytes:
        """All RAM concatenated in address order: what a raw dump of every range must equal."""
        return b"".join(self.contents(r.start, r.end) for r in self.ram)

    def digest(self) -> str:
        h = hashlib.sha256()
        for r in self.ram:
            for a in range(r.start, r.end, ONE_MIB):
                h.update(self.contents(a, min(a + ONE_MIB, r.end)))
        return h.hexdigest()

    # -- kernel's virtual view (what /proc/kcore describes) ---------------------------------------

    def kcore_segments(self) -> list[tuple[str, int, int | None, int]]:
        """``(kind, vaddr, paddr or None, size)``: text, one direct-map segment per RAM range
        (whole pages only, as the kernel publishes them), modules and vmalloc (not RAM)."""
        code = self.kernel_code()
        text_start = code.start - code.start % self.page_size
        segments: list[tuple[str, int, int | None, int]] = [
            ("text", KERNEL_TEXT_BASE + self.kaslr_slide, text_start,
             -(-code.end // self.page_size) * self.page_size - text_start)]
        for r in self.ram:
            start = -(-r.start // self.page_size) * self.page_size
            end = r.end - r.end % self.page_size
            if end > start:
                segments.append(("ram", DIRECT_MAP_BASE + start, start, end - start))
        segments.append(("modules", MODULES_BASE + self.kaslr_slide, None, ONE_MIB))
        segments.append(("vmalloc", VMALLOC_BASE, None, 32 << 40))
        return segments

    def module_area(self) -> bytes:
        """Contents of the emulated modules area (not RAM-backed in the truth's physical view)."""
        if self._modules is None:
            self._modules = random_bytes(random.Random(self.seed ^ 0x30D), ONE_MIB)
        return self._modules

    def to_dict(self) -> dict:
        return {"seed": self.seed, "ram_size": self.ram_size, "page_size": self.page_size,
                "release": self.release}


def _layout(rng: random.Random, ram_size: int) -> list[Resource]:
    """An x86-like /proc/iomem: firmware in the first MiB, RAM split by reserved/ACPI/MMIO gaps,
    one range of hot-plugged RAM nested under its device, and partial last pages."""
    top: list[Resource] = []

    def add(start: int, end: int, name: str, parent: Resource | None = None) -> Resource:
        node = Resource(start, end, name, (parent.depth + 1) if parent else 0)
        (parent.children if parent else top).append(node)
        return node

    add(0x0, 0x1000, "Reserved")
    low_end = rng.choice([0x9FC00, 0x9F800, 0x9F000, 0x9E400])
    add(0x1000, low_end, "System RAM")
    add(low_end, 0xA0000, "Reserved")
    add(0xA0000, 0xC0000, "PCI Bus 0000:00")
    add(0xC0000, 0xC9800, "Video ROM")
    rom = add(0xF0000, 0x100000, "Reserved")
    add(0xF0000, 0x100000, "System ROM", rom)

    remaining = ram_size - (low_end - 0x1000)
    pieces = rng.randint(3, 4)
    sizes = []
    for i in range(pieces - 1):
        share = remaining // (pieces - i)
        size = max(ONE_MIB, (share * rng.randint(60, 140) // 100) // PAGE * PAGE)
        size = min(size, remaining - (pieces - 1 - i) * ONE_MIB)
        sizes.append(size)
        remaining -= size
    sizes.append(max(ONE_MIB, remaining // PAGE * PAGE))

    address = 0x100000
    gap_kinds = ["Reserved", "ACPI Tables", "ACPI Non-volatile Storage", "PCI Bus 0000:00"]
    nested_index = rng.randrange(1, pieces)
    for index, size in enumerate(sizes):
        if index == nested_index:
            # Hot-plugged RAM lives under its device, which also spans unplugged (non-RAM) space.
            device = add(address, address + size + 16 * PAGE, "virtio0")
            ram = add(address, address + size, "System RAM (virtio_mem)", device)
            end = device.end
        else:
            ram = add(address, address + size, "System RAM")
            end = ram.end
        if index == 0:
            # Kernel text and rodata inside the first big range, scaled down on small machines.
            code_len = min(0x7FF3B1, size // 4)
            code_start = address + (size // 8) // PAGE * PAGE
            add(code_start, code_start + code_len, "Kernel code", ram)
            rodata_start = -(-(code_start + code_len) // PAGE) * PAGE
            add(rodata_start, rodata_start + min(0x2C2000, size // 8), "Kernel rodata", ram)
        if index == pieces - 1:
            # The last range ends inside a page, as firmware maps sometimes do.
            ram.end -= rng.choice([0x400, 0x800, 0xC00])
            if ram.end > end:
                end = ram.end
        gap = rng.randint(1, 64) * PAGE * rng.choice([1, 4, 16])
        kind = rng.choice(gap_kinds)
        gap_start = -(-end // PAGE) * PAGE
        gap_node = add(gap_start, gap_start + gap, kind)
        if kind == "PCI Bus 0000:00":
            add(gap_start, gap_start + min(gap, 16 * PAGE), "0000:00:02.0", gap_node)
        address = gap_node.end
    mmio = add(address, address + 16 * ONE_MIB, "PCI Bus 0000:00")
    add(address, address + ONE_MIB, "0000:00:03.0", mmio)
    return top
