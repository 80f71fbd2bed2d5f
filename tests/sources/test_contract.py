"""One contract every DevMemory backend passes, checked against the emulator's truth."""

from __future__ import annotations

import errno
import random

import pytest

from emulator.device import EmulatedMemory
from memdump.errors import HoleError
from memdump.host import Host
from memdump.sources import names, source_class
from memdump.sources.base import USABLE, DevMemory, Probe
from memdump.sources.devmem import DevMem
from memdump.sources.kcore import Kcore

PHYSICAL_BACKENDS = ["devmem", "kcore", "kcore-paddr-zero", "emulator", "kmod"]


def open_backend(kind, root_factory):
    """(source, machine, whether holes raise) for one backend on an emulated machine."""
    if kind == "emulator":
        source = EmulatedMemory(machine=root_factory("plain", kmod=True)[1])
        return source, source.machine, True
    if kind == "kmod":
        root, machine = root_factory("plain", kmod=True)
        return source_class("kmod")(Host(root)), machine, False
    if kind == "kcore-paddr-zero":
        root, machine = root_factory("paddr0", kcore_paddr="zero")
        return Kcore(Host(root)), machine, True
    root, machine = root_factory("plain", kmod=True)
    cls = {"devmem": DevMem, "kcore": Kcore}[kind]
    # a regular file image reads its holes as zeros: only device files can refuse them
    return cls(Host(root)), machine, kind == "kcore"


@pytest.mark.parametrize("kind", PHYSICAL_BACKENDS)
def test_backend_contract(kind, root_factory):
    source, machine, holes_raise = open_backend(kind, root_factory)
    with source:
        assert isinstance(source, DevMemory)
        probe = type(source).probe(source.host, False)
        assert isinstance(probe, Probe) and probe.status == USABLE, probe
        assert probe.reason

        ranges = source.ranges()
        assert ranges, "a usable source serves something"
        for left, right in zip(ranges, ranges[1:]):
            assert left.end < right.start, "sorted, non-overlapping, non-touching"
        for r in ranges:
            assert r.start < r.end
            assert any(t.start <= r.start and r.end <= t.end for t in machine.ram), \
                f"{r} is not inside System RAM"
        # kcore publishes whole pages only; everything else serves RAM to the byte
        served = sum(r.size for r in ranges)
        assert served >= machine.ram_bytes - len(machine.ram) * 2 * machine.page_size

        rng = random.Random(kind)
        for r in ranges:
            spans = [(r.start, min(r.end, r.start + 4096)), (max(r.start, r.end - 4096), r.end)]
            for _ in range(3):
                a = rng.randrange(r.start, r.end)
                spans.append((a, min(r.end, a + rng.randrange(1, 3 * 4096))))
            for start, end in spans:
                assert source.read(start, end - start) == machine.contents(start, end), \
                    f"{kind}: bytes at {start:#x}-{end:#x} differ from the truth"

        if holes_raise:
            hole = ranges[0].end + 1  # past the first range, inside the next gap
            assert not machine.is_ram(hole)
            with pytest.raises(HoleError) as caught:
                source.read(hole, 16)
            assert caught.value.address == hole
            assert caught.value.errno in (errno.ENXIO, errno.EFAULT, errno.EIO, errno.EPERM)
            assert f"{hole:#x}" in str(caught.value)


def test_every_registered_backend_is_covered():
    covered = {k.split("-")[0] for k in PHYSICAL_BACKENDS}
    assert set(names()) <= covered | {"kmem"}


def test_kernel_views_serve_the_same_bytes(root_factory):
    """-k: kcore's kernel virtual view and the emulator's agree with the truth."""
    root, machine = root_factory("plain", kmod=True)
    segments = {kind: (vaddr, paddr, size) for kind, vaddr, paddr, size in machine.kcore_segments()}
    for source in (Kcore(Host(root), kernel=True), EmulatedMemory(machine=machine, kernel=True)):
        with source:
            vaddr, paddr, size = segments["text"]
            assert source.read(vaddr, size) == machine.contents(paddr, paddr + size)
            vaddr, _, size = segments["modules"]
            assert source.read(vaddr, size) == machine.module_area()[:size]
            served = source.ranges()
            assert not any(r.size > 64 << 30 for r in served), "vmalloc is left out"
