"""Machine facts recovered from an image's own RAM, for an ELF core made from a format that does
not record them (LiME, padded, raw): the kernel's VMCOREINFO note and the direct map's base.

drgn opens a kernel core only with VMCOREINFO in a note; crash matches vmlinux against the core
through KERNELOFFSET and phys_base in it and needs ``p_vaddr``. Both are in the image already:

* VMCOREINFO is an ELF note the kernel keeps in its own memory (``vmcoreinfo_note``, what
  /sys/kernel/vmcoreinfo points at): found by its header, ``namesz`` 11, type 0, the name
  "VMCOREINFO" and a text that starts with ``OSRELEASE=``;
* the direct map's base is where the kernel's own page tables (``init_top_pgt``, whose address
  VMCOREINFO gives) map physical address 0 in the kernel half, below the kernel's text mapping.
  x86-64 only, 4- and 5-level paging.

Nothing here is required: a fact that cannot be found is None.
"""

from __future__ import annotations

import bisect
import struct
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

from memdump import elf64
from memdump.facts import MachineFacts

if TYPE_CHECKING:
    from memdump.image import Image

NOTE_NAME = b"VMCOREINFO\x00\x00"           # the name, NUL-terminated and padded to 4 bytes
MARKER = NOTE_NAME + b"OSRELEASE="           # what the note's first bytes after its header are
MAX_NOTE = 1 << 20                          # the kernel's note is one page; anything larger is not it
SCAN_CHUNK = 8 << 20
START_KERNEL_MAP = 0xFFFFFFFF80000000       # x86-64: where the kernel's text is mapped
PRESENT, LARGE = 1, 1 << 7                  # page-table entry bits
ADDRESS_BITS = 0x000FFFFFFFFFF000           # a table entry's physical address
ENTRIES = 512


class PhysicalReader:
    """Reads physical addresses of an image through its regions (None where it holds none)."""

    def __init__(self, image: "Image"):
        self.image = image
        self.starts = [p.start for p in image.regions]

    def read(self, address: int, size: int) -> Optional[bytes]:
        index = bisect.bisect_right(self.starts, address) - 1
        if index < 0:
            return None
        placed = self.image.regions[index]
        if address + size > placed.end:
            return None
        return self.image.read(placed.offset + address - placed.start, size)


def parse_vmcoreinfo(text: bytes) -> Dict[str, str]:
    """``KEY=VALUE`` lines as a dict."""
    fields = {}
    for line in text.decode("ascii", "replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key] = value.strip()
    return fields


def _note_at(image: "Image", marker_offset: int) -> Optional[bytes]:
    """The VMCOREINFO text of a note whose name starts at file offset ``marker_offset``, if the
    header before it is a VMCOREINFO note's and its text reads as one."""
    if marker_offset < elf64.NHDR.size:
        return None
    namesz, descsz, note_type = elf64.NHDR.unpack(image.read(marker_offset - elf64.NHDR.size,
                                                             elf64.NHDR.size))
    if namesz != len(b"VMCOREINFO") + 1 or note_type != 0 or not 0 < descsz <= MAX_NOTE:
        return None
    start = marker_offset + len(NOTE_NAME)
    if start + descsz > image.file_size:
        return None
    desc = image.read(start, descsz).rstrip(b"\0")
    fields = parse_vmcoreinfo(desc)
    if "OSRELEASE" not in fields or "PAGESIZE" not in fields:
        return None
    return desc


def find_vmcoreinfo(image: "Image") -> Optional[Tuple[int, bytes]]:
    """(physical address of the note, its text): the first VMCOREINFO note in the image's RAM."""
    overlap = len(MARKER) - 1
    for placed in image.regions:
        done = 0
        while done < placed.size:
            size = min(SCAN_CHUNK + overlap, placed.size - done)
            chunk = image.read(placed.offset + done, size)
            at = chunk.find(MARKER)
            while at >= 0:
                desc = _note_at(image, placed.offset + done + at)
                if desc is not None:
                    return placed.start + done + at - elf64.NHDR.size, desc
                at = chunk.find(MARKER, at + 1)
            done += SCAN_CHUNK
    return None


def _entries(memory: PhysicalReader, table: int) -> Optional[List[int]]:
    blob = memory.read(table, ENTRIES * 8)
    return list(struct.unpack(f"<{ENTRIES}Q", blob)) if blob is not None else None


def direct_map_base(image: "Image", vmcoreinfo: Dict[str, str]) -> Optional[int]:
    """The virtual address at which the kernel's page tables map physical 0 in the kernel half
    (the direct map's base), or None when the tables cannot be read or are not x86-64's."""
    try:
        top = int(vmcoreinfo["SYMBOL(init_top_pgt)"], 16)
        phys_base = int(vmcoreinfo.get("NUMBER(phys_base)", "0"))
        sme_mask = int(vmcoreinfo.get("NUMBER(sme_mask)", "0"))
    except (KeyError, ValueError):
        return None
    five_level = vmcoreinfo.get("NUMBER(pgtable_l5_enabled)") == "1"
    shifts = (48, 39, 30, 21, 12) if five_level else (39, 30, 21, 12)
    top_bit = shifts[0] + 8  # the highest address bit the tables translate (47, or 56)
    memory = PhysicalReader(image)
    address_bits = ADDRESS_BITS & ~sme_mask

    def canonical(raw: int) -> int:
        """Sign-extended from the top bit, as the CPU requires of a kernel-half address."""
        if raw >> top_bit & 1:
            raw |= ~((1 << (top_bit + 1)) - 1) & 0xFFFFFFFFFFFFFFFF
        return raw

    def search(table: int, level: int, prefix: int) -> Optional[int]:
        entries = _entries(memory, table)
        if entries is None:
            return None
        shift = shifts[level]
        leaf_level = level == len(shifts) - 1
        # the direct map starts on a 1 GiB boundary: below the PUD level only entry 0 can map
        # physical 0 at its start; at and above it, any entry of the kernel half may
        first, last = (ENTRIES // 2, ENTRIES) if level == 0 else (0, ENTRIES)
        if shift < 30:
            last = 1
        for index in range(first, last):
            entry = entries[index]
            if not entry & PRESENT:
                continue
            vaddr = prefix | index << shift
            if leaf_level or (shift in (30, 21) and entry & LARGE):
                if entry & address_bits & ~((1 << shift) - 1) == 0:
                    return vaddr
                continue
            found = search(entry & address_bits, level + 1, vaddr)
            if found is not None:
                return found
        return None

    found = search(top - START_KERNEL_MAP + phys_base, 0, 0)
    if found is None:
        return None
    base = canonical(found)
    return base if base < START_KERNEL_MAP else None


def facts_from_image(image: "Image", known: MachineFacts) -> Tuple[MachineFacts, List[str]]:
    """``known`` completed from the image's RAM; and what was found, in words, for the user."""
    said: List[str] = []
    vmcoreinfo, base = known.vmcoreinfo, known.direct_map_base
    origin = dict(known.origin)
    if vmcoreinfo is None:
        found = find_vmcoreinfo(image)
        if found is not None:
            address, vmcoreinfo = found
            origin["vmcoreinfo"] = f"the image's RAM at {address:#x}"
            said.append(f"VMCOREINFO found in the image's RAM at {address:#x} "
                        f"(OSRELEASE={parse_vmcoreinfo(vmcoreinfo).get('OSRELEASE')})")
        else:
            said.append("no VMCOREINFO in the image's RAM: the ELF core's note is empty "
                        "(drgn and crash need it)")
    if base is None and vmcoreinfo is not None:
        base = direct_map_base(image, parse_vmcoreinfo(vmcoreinfo))
        if base is not None:
            said.append(f"direct map at {base:#x}, from the kernel's page tables in the image")
        else:
            said.append("the direct map's base is not in the image's page tables: p_vaddr is 0")
    return MachineFacts(vmcoreinfo, base, origin), said
