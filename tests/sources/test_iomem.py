"""The /proc/iomem parser on captures of real machines."""

from __future__ import annotations

import os

import pytest

from conftest import FIXTURES
from memdump.iomem import Iomem, IomemError, Range, intersect_ranges, merge_ranges


def load(name):
    with open(os.path.join(FIXTURES, "iomem", name)) as handle:
        return Iomem.parse(handle.read())


def test_qemu_guest_ram_is_half_open_and_keeps_the_partial_page():
    iomem = load("qemu-512m.txt")
    assert iomem.ram_ranges() == [Range(0x1000, 0x9FC00), Range(0x100000, 0x1FFDA000)]
    assert iomem.find("Kernel code") == [Range(0x0F000000, 0x0FC02567)]
    assert not iomem.addresses_hidden


def test_laptop_ram_skips_reserved_and_acpi():
    ram = load("laptop.txt").ram_ranges()
    assert ram == [Range(0x1000, 0x9F000), Range(0x100000, 0x9BFF000), Range(0xA001000, 0xA200000),
                   Range(0xA20F000, 0xB8F3F000), Range(0xBB2FF000, 0xBC000000),
                   Range(0x100000000, 0x42F380000)]
    names = {r.name for r in load("laptop.txt").walk()}
    assert {"ACPI Tables", "ACPI Non-volatile Storage", "Reserved"} <= names


def test_nested_virtio_mem_and_kmem_ram_count():
    ram = load("virtio-mem.txt").ram_ranges()
    # boot RAM and two adjacent virtio_mem blocks touch: one range
    assert Range(0x100000000, 0x150000000) in ram
    assert Range(0x158000000, 0x160000000) in ram
    assert Range(0x340000000, 0x380000000) in ram  # System RAM (kmem) under dax0.0
    assert all(r.end <= 0x380000000 for r in ram)
    # the unplugged part of the virtio device is not RAM
    assert not any(r.start <= 0x150000000 < r.end for r in ram)


def test_non_root_view_is_detected():
    iomem = load("nonroot-laptop.txt")
    assert iomem.addresses_hidden
    assert len(list(iomem.walk())) == len(list(load("laptop.txt").walk()))


def test_format_round_trips():
    for name in ("qemu-512m.txt", "laptop.txt", "virtio-mem.txt"):
        with open(os.path.join(FIXTURES, "iomem", name)) as handle:
            text = handle.read()
        assert Iomem.parse(Iomem.parse(text).format()).format() == Iomem.parse(text).format()
        assert Iomem.parse(text).format().lower() == text.lower()


@pytest.mark.parametrize("text", ["00001000-0009fbff System RAM\n", "zz-10 : x\n", "2000-1000 : x\n"])
def test_malformed_lines_are_refused_with_the_line_number(text):
    with pytest.raises(IomemError, match=":1:"):
        Iomem.parse(text)


def test_range_helpers():
    assert merge_ranges([Range(5, 9), Range(0, 3), Range(3, 4), Range(8, 12)]) == [Range(0, 4), Range(5, 12)]
    assert intersect_ranges([Range(0, 10), Range(20, 30)], [Range(5, 25)]) == [Range(5, 10), Range(20, 25)]
