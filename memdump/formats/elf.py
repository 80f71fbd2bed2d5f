"""ELF64 core: what crash, drgn, gdb and Volatility 3's Elf64Layer read.

Layout: the ELF header, the program headers (one PT_NOTE, then one PT_LOAD per region in
ascending ``p_paddr``), the note (VMCOREINFO when the machine provides it; empty otherwise),
zeros up to a page boundary, then the regions' bytes back to back. ``p_filesz == p_memsz``;
``p_vaddr`` is the direct-map address where its base is known, else 0; ``p_align`` is 0 as in
kexec-tools' vmcores, because segments are not page-congruent in the file.
"""

from __future__ import annotations

from memdump import elf64
from memdump.errors import UsageError
from memdump.formats.base import FormatWriter, Placed

DATA_ALIGN = 4096
PF_RWX = 7
MAX_SEGMENTS = 0xFFFE  # e_phnum is 16 bits and 0xFFFF means "look elsewhere" (PN_XNUM)


class ElfWriter(FormatWriter):
    name = "elf"

    def _note(self) -> bytes:
        if self.meta.vmcoreinfo is None:
            return b""
        return elf64.pack_note(elf64.Note(b"VMCOREINFO", 0, self.meta.vmcoreinfo))

    def header_size(self) -> int:
        """Headers and the note, padded so the data starts on a page boundary."""
        end = elf64.EHDR.size + elf64.PHDR.size * (1 + len(self.regions)) + len(self._note())
        return -(-end // DATA_ALIGN) * DATA_ALIGN

    def layout(self) -> list[Placed]:
        if len(self.regions) + 1 > MAX_SEGMENTS:
            raise UsageError(f"elf: {len(self.regions)} regions exceed the {MAX_SEGMENTS - 1} an ELF header can count")
        placed, offset = [], self.header_size()
        for r in self.regions:
            placed.append(Placed(r.start, r.end, offset))
            offset += r.size
        return placed

    def headers(self) -> bytes:
        """Everything before the first region's bytes."""
        note = self._note()
        note_offset = elf64.EHDR.size + elf64.PHDR.size * (1 + len(self.regions))
        segments = [elf64.Segment(elf64.PT_NOTE, 0, note_offset, 0, 0, len(note), len(note), 0)]
        base = self.meta.direct_map_base
        for p in self.placed:
            vaddr = (base + p.start) & 0xFFFFFFFFFFFFFFFF if base is not None else 0
            segments.append(elf64.Segment(elf64.PT_LOAD, PF_RWX, p.offset, vaddr, p.start,
                                          p.size, p.size, 0))
        blob = elf64.pack_header(elf64.ET_CORE, elf64.EM_X86_64, len(segments))
        blob += b"".join(s.pack() for s in segments) + note
        return blob + bytes(self.header_size() - len(blob))

    def begin(self) -> None:
        self.sink.write(self.headers())


__all__ = ["ElfWriter"]
