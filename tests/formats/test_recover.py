"""VMCOREINFO and the direct map recovered from an image's RAM when it is converted to an ELF
core: page tables and a note built here, at addresses the test chooses, are what must be found."""

from __future__ import annotations

import os
import struct

import pytest

from conftest import run_main
from memdump import elf64
from memdump.image import open_image
from memdump.recover import START_KERNEL_MAP, direct_map_base, find_vmcoreinfo, parse_vmcoreinfo

RAM = 64 << 20
PGD, NOTE = 0x100000, 0x7000
P, PS = 1, 1 << 7


class Ram:
    """A padded image being built: ``put`` bytes at physical addresses."""

    def __init__(self):
        self.writes = {}

    def put(self, address, data):
        self.writes[address] = data

    def entry(self, table, index, value):
        self.put(table + 8 * index, struct.pack("<Q", value))

    def save(self, path):
        with open(path, "wb") as f:
            f.truncate(RAM)
            for address, data in self.writes.items():
                f.seek(address)
                f.write(data)
        with open(f"{path}.map", "w") as f:
            f.write(f"0x0 {RAM:#x}\n")


def index(vaddr, shift):
    return vaddr >> shift & 511


def vmcoreinfo_text(five_level):
    return (f"OSRELEASE=6.1.0-test\nPAGESIZE=4096\nSYMBOL(init_top_pgt)={START_KERNEL_MAP + PGD:x}\n"
            f"NUMBER(phys_base)=0\nNUMBER(pgtable_l5_enabled)={int(five_level)}\nKERNELOFFSET=1a000000\n").encode()


def build(tmp_path, five_level, base):
    """Page tables mapping physical 0 at ``base`` (a 2 MiB page under a PMD table; no direct map
    when ``base`` is None), a decoy mapping of physical 2 MiB lower in the kernel half, physical
    0 mapped in the user half too (as an identity map would), the kernel text mapping (which maps
    physical 0 too, at START_KERNEL_MAP) and the VMCOREINFO note."""
    ram = Ram()
    shifts = (48, 39, 30, 21) if five_level else (39, 30, 21)
    free = [PGD + 0x1000 * n for n in range(1, 32)]

    def map_large(vaddr, phys):
        table = PGD
        for level, shift in enumerate(shifts):
            slot = index(vaddr, shift)
            if shift == 21:
                ram.entry(table, slot, phys | P | PS)
                return
            key = (table, slot)
            if key not in tables:
                tables[key] = free.pop(0)
                ram.entry(table, slot, tables[key] | P)
            table = tables[key]

    tables = {}
    decoy = (0xFF11000000000000 if five_level else 0xFFFF800000000000) + (1 << 30)
    map_large(1 << 30, 0)
    map_large(decoy, 0x200000)
    if base is not None:
        map_large(base, 0)
    map_large(START_KERNEL_MAP, 0)
    text = vmcoreinfo_text(five_level)
    ram.put(NOTE, elf64.pack_note(elf64.Note(b"VMCOREINFO", 0, text)))
    # a near miss before it: the name without a VMCOREINFO header
    ram.put(NOTE - 0x800, b"VMCOREINFO\x00\x00OSRELEASE=not-a-note\n")
    path = tmp_path / "ram.padded"
    ram.save(path)
    return path, text


@pytest.mark.parametrize("five_level, base", [(False, 0xFFFF9A4480000000), (True, 0xFF45B5C000000000)])
def test_the_note_and_the_direct_map_are_found(tmp_path, five_level, base):
    path, text = build(tmp_path, five_level, base)
    with open_image(str(path)) as image:
        address, found = find_vmcoreinfo(image)
        assert (address, found) == (NOTE, text)
        assert direct_map_base(image, parse_vmcoreinfo(found)) == base


def test_convert_to_elf_records_what_it_found(tmp_path, capfdbinary):
    path, text = build(tmp_path, False, 0xFFFF9A4480000000)
    out = tmp_path / "core.elf"
    code, _, err = run_main(capfdbinary, "convert", str(path), str(out), "--to", "elf")
    assert code == 0, err
    assert f"VMCOREINFO found in the image's RAM at {NOTE:#x}" in err and "direct map at 0xffff9a4480000000" in err
    blob = out.read_bytes()
    _, _, phoff, phnum = elf64.parse_header(blob[:elf64.EHDR.size])
    segments = elf64.read_segments(lambda offset, size: blob[offset:offset + size], phoff, phnum)
    note = [s for s in segments if s.type == elf64.PT_NOTE][0]
    assert elf64.parse_notes(blob[note.offset:note.offset + note.filesz]) == [elf64.Note(b"VMCOREINFO", 0, text)]
    loads = [s for s in segments if s.type == elf64.PT_LOAD]
    assert [(s.paddr, s.vaddr) for s in loads] == [(0, 0xFFFF9A4480000000)]
    assert blob[loads[0].offset:loads[0].offset + RAM] == path.read_bytes()


def test_without_a_note_nothing_is_made_up(tmp_path, capfdbinary):
    path = tmp_path / "plain.padded"
    with open(path, "wb") as f:
        f.truncate(1 << 20)
    (tmp_path / "plain.padded.map").write_text("0x0 0x100000\n")
    out = tmp_path / "plain.elf"
    code, _, err = run_main(capfdbinary, "convert", str(path), str(out), "--to", "elf")
    assert code == 0 and "no VMCOREINFO in the image's RAM" in err
    with open_image(str(out)) as image:
        assert image.facts().vmcoreinfo is None and image.direct_map_base is None


def test_unreadable_tables_give_no_base(tmp_path):
    path, text = build(tmp_path, False, 0xFFFF9A4480000000)
    info = parse_vmcoreinfo(text)
    info["SYMBOL(init_top_pgt)"] = f"{START_KERNEL_MAP + RAM + 0x1000:x}"  # outside the image
    with open_image(str(path)) as image:
        assert direct_map_base(image, info) is None
        assert direct_map_base(image, {"OSRELEASE": "x"}) is None


def test_the_kernel_text_mapping_is_not_the_direct_map(tmp_path):
    """Only the text mapping maps physical 0 in the kernel half: there is no direct map to give."""
    path, text = build(tmp_path, False, None)
    with open_image(str(path)) as image:
        assert direct_map_base(image, parse_vmcoreinfo(text)) is None


@pytest.mark.parametrize("five_level", [False, True])
def test_info_names_the_kernel_and_warns_of_five_level_paging(tmp_path, capfdbinary, five_level):
    path, _ = build(tmp_path, five_level, 0xFFFF9A4480000000 if not five_level else 0xFF45B5C000000000)
    code, out, err = run_main(capfdbinary, "info", str(path))
    assert code == 0, err
    text = out.decode()
    assert f"VMCOREINFO: in RAM at {NOTE:#x}, OSRELEASE=6.1.0-test" in text
    assert ("5-level page tables, which Volatility 3 cannot walk" in text) is five_level
    elf = tmp_path / "core.elf"
    assert run_main(capfdbinary, "convert", str(path), str(elf), "--to", "elf")[0] == 0
    code, out, _ = run_main(capfdbinary, "info", str(elf))
    assert code == 0 and ("Volatility 3 cannot walk" in out.decode()) is five_level
