"""ELF64 core: what crash, drgn, gdb and Volatility 3's Elf64Layer read.

Layout: the ELF header, the program headers (one PT_NOTE, then one PT_LOAD per region in
ascending ``p_paddr``), the note (VMCOREINFO when the machine provides it; empty otherwise),
zeros up to a page boundary, then the regions' bytes back to back. ``p_filesz == p_memsz``;
``p_vaddr`` is the direct-map address where its base is known, else 0; ``p_align`` is 0 as in
kexec-tools' vmcores, because segments are not page-congruent in the file.
"""

from __future__ import annotations

import os
from typing import List, Set, Tuple

from memdump import elf64
from memdump.errors import ImageError, UsageError
from memdump.formats.base import FormatWriter, Layout, Placed, back_to_back

DATA_ALIGN = 4096
PF_RWX = 7
MAX_SEGMENTS = 0xFFFE  # e_phnum is 16 bits and 0xFFFF means "look elsewhere" (PN_XNUM)


class ElfWriter(FormatWriter):
    name = "elf"

    @classmethod
    def detect(cls, head: bytes) -> bool:
        return head[:4] == elf64.ELF_MAGIC

    @classmethod
    def read(cls, fd: int, path: str, size: int) -> Layout:
        found = Layout()
        head = os.pread(fd, elf64.EHDR.size, 0)
        try:
            e_type, _machine, phoff, phnum = elf64.parse_header(head)
        except elf64.ElfFormatError as exc:
            raise ImageError(path, exc.offset, f"ELF header: {exc}") from None
        if e_type != elf64.ET_CORE:
            raise ImageError(path, 0x10, f"ELF type {e_type} is not a core file (ET_CORE)")
        if phoff + phnum * elf64.PHDR.size > size:
            raise ImageError(path, phoff, f"program header table ({phnum} entries) runs past the end of "
                                          f"the file ({size:#x} bytes)")
        segments = elf64.read_segments(lambda offset, count: os.pread(fd, count, offset), phoff, phnum)
        loads: List[Tuple[Placed, int]] = []  # (region, offset of its program header)
        bases: Set[int] = set()
        for index, seg in enumerate(segments):
            where = phoff + index * elf64.PHDR.size
            if seg.type not in (elf64.PT_LOAD, elf64.PT_NOTE) or not seg.filesz:
                continue
            if seg.offset + seg.filesz > size:
                what = "note" if seg.type == elf64.PT_NOTE else f"segment for {seg.paddr:#x}"
                raise ImageError(path, where, f"program header {index}: {what} data "
                                              f"({seg.offset:#x}+{seg.filesz:#x}) runs past the end of the "
                                              f"file ({size:#x} bytes)")
            if seg.type == elf64.PT_NOTE:
                found.notes += elf64.parse_notes(os.pread(fd, seg.filesz, seg.offset))
                continue
            if seg.memsz != seg.filesz:
                found.remarks.append(f"program header {index}: p_memsz {seg.memsz:#x} != p_filesz "
                                     f"{seg.filesz:#x}; only the file's bytes count")
            loads.append((Placed(seg.paddr, seg.paddr + seg.filesz, seg.offset), where))
            if seg.vaddr:
                bases.add((seg.vaddr - seg.paddr) & 0xFFFFFFFFFFFFFFFF)
        if not loads:
            raise ImageError(path, phoff, "no PT_LOAD segment with data")
        ordered = sorted(loads, key=lambda pair: pair[0].start)
        if ordered != loads:
            found.remarks.append("PT_LOAD segments are not in ascending p_paddr order")
        for (before, _), (region, where) in zip(ordered, ordered[1:]):
            if region.start < before.end:
                raise ImageError(path, where, f"PT_LOAD segment {region.start:#x}-{region.end:#x} overlaps "
                                              f"{before.start:#x}-{before.end:#x}")
        found.regions = [region for region, _ in ordered]
        found.direct_map_base = bases.pop() if len(bases) == 1 else None
        return found

    def _note(self) -> bytes:
        if self.facts.vmcoreinfo is None:
            return b""
        return elf64.pack_note(elf64.Note(b"VMCOREINFO", 0, self.facts.vmcoreinfo))

    def header_size(self) -> int:
        """Headers and the note, padded so the data starts on a page boundary."""
        end = elf64.EHDR.size + elf64.PHDR.size * (1 + len(self.regions)) + len(self._note())
        return -(-end // DATA_ALIGN) * DATA_ALIGN

    def layout(self) -> List[Placed]:
        if len(self.regions) + 1 > MAX_SEGMENTS:
            raise UsageError(f"elf: {len(self.regions)} regions exceed the {MAX_SEGMENTS - 1} an ELF header can count")
        return back_to_back(self.regions, self.header_size())

    def headers(self) -> bytes:
        """Everything before the first region's bytes."""
        note = self._note()
        note_offset = elf64.EHDR.size + elf64.PHDR.size * (1 + len(self.regions))
        segments = [elf64.Segment(elf64.PT_NOTE, 0, note_offset, 0, 0, len(note), len(note), 0)]
        base = self.facts.direct_map_base
        for p in self.placed:
            vaddr = (base + p.start) & 0xFFFFFFFFFFFFFFFF if base is not None else 0
            segments.append(elf64.Segment(elf64.PT_LOAD, PF_RWX, p.offset, vaddr, p.start,
                                          p.size, p.size, 0))
        blob = elf64.pack_header(elf64.ET_CORE, elf64.EM_X86_64, len(segments))
        blob += b"".join(s.pack() for s in segments) + note
        return blob + bytes(self.header_size() - len(blob))

    def begin(self) -> None:
        self.sink.write(self.headers())
