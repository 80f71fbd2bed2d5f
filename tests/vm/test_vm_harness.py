"""Unit tests of the real-kernel tier's own machinery (no QEMU, no root): the output readers and
comparison, the initramfs writer, the module dependency order."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import compare  # noqa: E402
import guest  # noqa: E402
import rawdump  # noqa: E402

PAGE = 4096
IOMEM = """00000000-00000fff : Reserved
00001000-0009fbff : System RAM
0009fc00-0009ffff : Reserved
00100000-007fffff : System RAM
  00200000-002fffff : Kernel code
00800000-00ffffff : virtio2
  00800000-00bfffff : System RAM (virtio_mem)
"""


def test_parse_map_accepts_memdump_lines():
    assert compare.parse_map("0x1000 0x9fc00\n0x100000 0x800000\n") == [
        (0x1000, 0x9FC00), (0x100000, 0x800000)]


@pytest.mark.parametrize("text", ["0x1000 0x1000\n", "0x2000 0x3000\n0x1000 0x2000\n",
                                  "0x1000 0x3000\n0x2000 0x4000\n", "0X1000 0x2000\n",
                                  "0x1000  0x2000\n", "1000 2000\n"])
def test_parse_map_refuses_bad_lines(text):
    with pytest.raises(ValueError):
        compare.parse_map(text)


def test_iomem_ranges_include_nested_ram_and_partial_pages():
    assert compare.iomem_ranges(IOMEM) == [(0x1000, 0x9FC00), (0x100000, 0xC00000)]
    assert rawdump.ram_ranges(IOMEM) == compare.iomem_ranges(IOMEM)
    assert compare.iomem_entry(IOMEM, "Kernel code") == (0x200000, 0x300000)


@pytest.fixture
def machine(tmp_path):
    """A RAM file whose every page is distinct, and a raw dump + map of all its RAM."""
    size = 0x1000000
    ram = bytearray(size)
    for page in range(0, size, PAGE):
        ram[page:page + 16] = page.to_bytes(8, "little") * 2
    ram_file = tmp_path / "ram"
    ram_file.write_bytes(ram)
    regions = compare.iomem_ranges(IOMEM)
    (tmp_path / "dump.out").write_bytes(b"".join(ram[s:e] for s, e in regions))
    (tmp_path / "dump.map").write_text("".join(f"0x{s:x} 0x{e:x}\n" for s, e in regions))
    return tmp_path, ram, regions


def run_compare(tmp_path, regions, **kw):
    ram = compare.GuestRam(tmp_path / "ram")
    try:
        return compare.compare(compare.read_raw(tmp_path / "dump.out", tmp_path / "dump.map"),
                               ram, regions, {"kernel code": (0x200000, 0x300000)}, **kw)
    finally:
        ram.close()


def test_identical_dump_passes(machine):
    tmp_path, ram, regions = machine
    verdict = run_compare(tmp_path, regions,
                          expected={"page": (0x400000, bytes(ram[0x400000:0x401000]))})
    assert verdict.failed() == [] and verdict.percent == 100.0
    # the partial last page of the first range counts as a page
    assert verdict.pages == (0x9FC00 - 0x1000 + PAGE - 1) // PAGE + (0xC00000 - 0x100000) // PAGE


def test_changed_kernel_text_and_misplaced_page_fail(machine):
    tmp_path, ram, regions = machine
    data = bytearray((tmp_path / "dump.out").read_bytes())
    offset_of = lambda addr: addr - 0x100000 + (0x9FC00 - 0x1000)  # noqa: E731
    data[offset_of(0x250000)] ^= 1  # one bit of kernel text
    data[offset_of(0x500000):offset_of(0x501000)] = ram[0x501000:0x502000]  # a misplaced page
    (tmp_path / "dump.out").write_bytes(bytes(data))
    verdict = run_compare(tmp_path, regions, min_percent=100.0)
    failed = " ".join(verdict.failed())
    assert "kernel code" in failed and "identical pages" in failed
    assert verdict.differing == [0x250000, 0x500000]


def test_unreadable_pages_must_be_left_out(machine):
    tmp_path, ram, regions = machine
    # the dump leaves out one offline page: fine once kpageflags says it is offline
    hole = 0x900000
    kept = [(0x1000, 0x9FC00), (0x100000, hole), (hole + PAGE, 0xC00000)]
    (tmp_path / "dump.out").write_bytes(b"".join(ram[s:e] for s, e in kept))
    (tmp_path / "dump.map").write_text("".join(f"0x{s:x} 0x{e:x}\n" for s, e in kept))
    assert "coverage" in " ".join(run_compare(tmp_path, regions).failed())
    flags = bytearray(8 * (0xC00000 // PAGE))
    flags[hole // PAGE * 8 + 2] = 0x80  # bit 23: KPF_OFFLINE
    unreadable = compare.unreadable_pages(bytes(flags), regions)
    assert unreadable == {hole}
    assert run_compare(tmp_path, regions, unreadable=unreadable).failed() == []


def test_bytes_outside_ram_fail(machine):
    tmp_path, ram, regions = machine
    (tmp_path / "dump.out").write_bytes(bytes(ram[0:0x1000]))
    (tmp_path / "dump.map").write_text("0x0 0x1000\n")
    assert "in System RAM" in " ".join(run_compare(tmp_path, regions).failed())


def test_map_and_output_sizes_must_agree(machine):
    tmp_path, _, regions = machine
    with open(tmp_path / "dump.out", "ab") as f:
        f.write(b"x")
    with pytest.raises(ValueError):
        run_compare(tmp_path, regions)


def test_pattern_page_matches_mdtool():
    page = compare.pattern_page()
    assert len(page) == PAGE and page[:8] == (0x4D454D44554D5021).to_bytes(8, "little")


@pytest.mark.skipif(not shutil.which("cpio"), reason="no cpio tool")
def test_initramfs_cpio_lists(tmp_path):
    archive = guest.Cpio()
    archive.directory("bin")
    archive.file("bin/hello", b"hi\n", 0o755)
    archive.symlink("bin/sh", "hello")
    archive.chardev("console", 5, 1)
    listing = subprocess.run(["cpio", "-itv"], input=archive.finish(), capture_output=True).stdout
    text = listing.decode()
    assert "bin/hello" in text and "bin/sh -> hello" in text and "console" in text


@pytest.mark.skipif(not os.path.exists("/lib/modules/6.1.0-56-amd64/modules.dep"),
                    reason="Debian's 6.1 modules are not installed")
def test_module_order_puts_dependencies_first():
    order = [Path(p).name.split(".ko")[0] for p in guest.module_load_order("6.1.0-56-amd64")]
    for dep, user in [("virtio_ring", "virtio"), ("virtio", "virtio_pci"), ("9pnet", "9pnet_virtio"),
                      ("netfs", "fscache"), ("fscache", "9p"), ("9pnet", "9p")]:
        assert order.index(dep) < order.index(user)
