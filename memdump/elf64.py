"""Just enough ELF64 to read ``/proc/kcore`` and the images memdump writes (little-endian only)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

ELF_MAGIC = b"\x7fELF"
ELFCLASS64 = 2
ELFDATA2LSB = 1
ET_CORE = 4
EM_X86_64 = 62
PT_LOAD = 1
PT_NOTE = 4
NO_PADDR = 0xFFFFFFFFFFFFFFFF  # kcore's p_paddr for segments that are not RAM (vmalloc, modules)

EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
PHDR = struct.Struct("<IIQQQQQQ")
NHDR = struct.Struct("<III")


@dataclass(frozen=True)
class Segment:
    type: int
    flags: int
    offset: int
    vaddr: int
    paddr: int
    filesz: int
    memsz: int
    align: int

    def pack(self) -> bytes:
        return PHDR.pack(self.type, self.flags, self.offset, self.vaddr, self.paddr,
                         self.filesz, self.memsz, self.align)


@dataclass(frozen=True)
class Note:
    name: bytes
    type: int
    desc: bytes


class ElfFormatError(ValueError):
    def __init__(self, offset: int, message: str):
        super().__init__(message)
        self.offset = offset


def parse_header(blob: bytes) -> tuple[int, int, int, int]:
    """Validate an ELF64 little-endian header; returns (e_type, e_machine, e_phoff, e_phnum)."""
    if len(blob) < EHDR.size:
        raise ElfFormatError(0, "too short for an ELF64 header")
    ident, e_type, machine, _version, _entry, phoff, _shoff, _flags, ehsize, phentsize, phnum, \
        _shentsize, _shnum, _shstrndx = EHDR.unpack_from(blob)
    if ident[:4] != ELF_MAGIC:
        raise ElfFormatError(0, "not an ELF file")
    if ident[4] != ELFCLASS64 or ident[5] != ELFDATA2LSB:
        raise ElfFormatError(4, "not a little-endian ELF64 file")
    if phnum and phentsize != PHDR.size:
        raise ElfFormatError(0x36, f"unexpected program header size {phentsize}")
    return e_type, machine, phoff, phnum


def read_segments(read_at, phoff: int, phnum: int) -> list[Segment]:
    """Program headers through ``read_at(offset, size) -> bytes``."""
    table = read_at(phoff, PHDR.size * phnum)
    if len(table) < PHDR.size * phnum:
        raise ElfFormatError(phoff, f"program header table truncated ({phnum} entries expected)")
    return [Segment(*PHDR.unpack_from(table, i * PHDR.size)) for i in range(phnum)]


def parse_notes(blob: bytes) -> list[Note]:
    notes = []
    offset = 0
    while offset + NHDR.size <= len(blob):
        namesz, descsz, note_type = NHDR.unpack_from(blob, offset)
        offset += NHDR.size
        name = blob[offset:offset + namesz].rstrip(b"\0")
        offset += (namesz + 3) & ~3
        desc = blob[offset:offset + descsz]
        offset += (descsz + 3) & ~3
        if namesz == 0 and descsz == 0:
            break
        notes.append(Note(name, note_type, desc))
    return notes


def pack_note(note: Note) -> bytes:
    name = note.name + b"\0"
    pad = lambda b: b + b"\0" * (-len(b) % 4)  # noqa: E731 - notes pad name and desc to 4 bytes
    return NHDR.pack(len(name), len(note.desc), note.type) + pad(name) + pad(note.desc)


def pack_header(e_type: int, machine: int, phnum: int) -> bytes:
    ident = ELF_MAGIC + bytes([ELFCLASS64, ELFDATA2LSB, 1, 0]) + b"\0" * 8
    return EHDR.pack(ident, e_type, machine, 1, 0, EHDR.size if phnum else 0, 0, 0,
                     EHDR.size, PHDR.size, phnum, 0, 0, 0)
