"""The default RAM walk, byte for byte against the emulator's truth, across seeds, flags and faults."""

from __future__ import annotations

import os
import random

import pytest

from conftest import expected_ram_walk, raw_walk
from emulator.device import EmulatedMemory, Faults
from emulator.machine import Machine
from memdump.sink import Sink


def walk(source, tmp_path, **options):
    path = tmp_path / "image"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    regions = []
    try:
        result = raw_walk(source, Sink(fd), on_region=lambda s, e: regions.append((s, e)), **options)
    finally:
        os.close(fd)
    return path.read_bytes(), regions, result


def bad_pages_for(machine, seed, count):
    rng = random.Random(seed)
    pages = []
    for _ in range(count):
        r = rng.choice(machine.ram)
        address = rng.randrange(r.start, r.end)
        pages.append(address - address % machine.page_size)
    return frozenset(pages)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("read_size, page_size", [(1 << 20, 4096), (4096, 4096), (1000, 4096),
                                                   (3 << 12, 4096), (64 << 10, 4096)])
def test_ram_walk_matches_truth(seed, read_size, page_size, tmp_path):
    machine = Machine(seed=seed, ram_size=6 << 20)
    data, regions, result = walk(EmulatedMemory(machine=machine), tmp_path,
                                 page_size=page_size, read_size=read_size)
    want_data, want_regions = expected_ram_walk(machine)
    assert regions == want_regions
    assert data == want_data
    assert result.bytes_written == len(want_data) and not result.holes


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("limit", [1, 4095, 4096, 1 << 20, 1000003, 5 << 20, 1 << 40])
def test_size_limit_caps_bytes_written(seed, limit, tmp_path):
    machine = Machine(seed=seed, ram_size=6 << 20)
    data, regions, _ = walk(EmulatedMemory(machine=machine), tmp_path, page_size=4096,
                            read_size=1 << 20, limit=limit)
    want_data, want_regions = expected_ram_walk(machine, limit=limit)
    assert (data, regions) == (want_data, want_regions)


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("read_size", [1 << 20, 4096, 5000])
def test_faulty_pages_become_holes_and_nothing_else_is_lost(seed, read_size, tmp_path):
    machine = Machine(seed=seed, ram_size=6 << 20)
    bad = bad_pages_for(machine, seed, 6)
    faults = Faults(eio_pages=bad, short_every=3, eintr_every=5)
    data, regions, result = walk(EmulatedMemory(machine=machine, faults=faults), tmp_path,
                                 page_size=4096, read_size=read_size)
    want_data, want_regions = expected_ram_walk(machine, bad_pages=bad)
    assert regions == want_regions
    assert data == want_data
    holes = {h.start - h.start % 4096 for h in result.holes}
    assert holes == bad and all(h.reason == "EIO" for h in result.holes)


def test_strict_devmem_rules_in_a_ram_walk(tmp_path):
    """Under STRICT_DEVMEM RAM above 1 MiB is refused page by page (EPERM) and low RAM is zeros."""
    machine = Machine(seed=3, ram_size=6 << 20)
    data, regions, result = walk(EmulatedMemory(machine=machine, behaviour="strict-devmem"), tmp_path,
                                 page_size=4096, read_size=1 << 20)
    low = machine.ram[0]
    assert regions == [(low.start, low.end)]
    whole_pages = low.end - low.end % 4096 - low.start
    assert data[:whole_pages] == bytes(whole_pages)
    last = machine.ram[-1]
    partial_page = last.end - last.end % 4096
    for hole in result.holes:
        # a page only partly RAM is not RAM to the kernel's page_is_ram: EFAULT, not EPERM
        assert hole.reason == ("EFAULT" if hole.start >= partial_page else "EPERM"), hole
    assert sum(h.end - h.start for h in result.holes) == machine.ram_bytes - low.size
