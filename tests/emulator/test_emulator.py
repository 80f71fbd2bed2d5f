"""The emulator is the truth every other test leans on: check it against its own promises."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO
from emulator.device import EmulatedMemory, Faults
from emulator.machine import HEADER, Machine
from emulator.rootfs import load_truth
from memdump import elf64
from memdump.errors import HoleError
from memdump.iomem import Iomem


def test_same_seed_same_machine_other_seed_other_machine():
    a, b, c = Machine(seed=5), Machine(seed=5), Machine(seed=6)
    assert a.iomem.format() == b.iomem.format() and a.digest() == b.digest()
    assert a.iomem.format() != c.iomem.format()
    assert a.contents(0x100000, 0x102000) != c.contents(0x100000, 0x102000)


@pytest.mark.parametrize("seed", range(20))
def test_layouts_have_what_tests_need(seed):
    machine = Machine(seed=seed, ram_size=8 << 20)
    names = [r.name for r in machine.iomem.walk()]
    assert len(machine.ram) >= 3
    assert "System RAM (virtio_mem)" in names
    assert "Kernel code" in names
    assert any(n.startswith("PCI Bus") for n in names)
    assert any(n in ("Reserved", "ACPI Tables", "ACPI Non-volatile Storage") for n in names)
    assert machine.ram[-1].end % 4096, "the last range ends inside a page"
    nested = [r for r in machine.iomem.walk() if r.name == "System RAM (virtio_mem)"]
    assert nested[0].depth == 1
    parsed = Iomem.parse(machine.iomem.format())
    assert parsed.ram_ranges() == machine.ram


def test_every_page_is_distinguishable():
    machine = Machine(seed=11, ram_size=16 << 20)
    seen = set()
    for r in machine.ram:
        first = r.start - r.start % 4096
        for page in range(first, r.end, 4096):
            content = machine.page(page)
            tag, address, seed, _ = HEADER.unpack_from(content)
            assert (address, seed) == (page, 11)
            seen.add(content)
    assert len(seen) == sum(1 for r in machine.ram for _ in range(r.start - r.start % 4096, r.end, 4096))


def test_fake_root_files_agree_with_the_truth(plain_root):
    root, machine = plain_root
    with open(os.path.join(root, "proc", "iomem")) as handle:
        assert Iomem.parse(handle.read()).ram_ranges() == machine.ram
    with open(os.path.join(root, "dev", "mem"), "rb") as image:
        blob = image.read()
    assert len(blob) == machine.address_space_end
    previous = 0
    for r in machine.ram:
        assert blob[r.start:r.end] == machine.contents(r.start, r.end)
        assert blob[previous:r.start] == bytes(r.start - previous), "holes read as zeros"
        previous = r.end
    rebuilt, truth = load_truth(root)
    assert rebuilt.digest() == truth["sha256_ram"] == machine.digest()


def test_kcore_is_an_elf_core_with_real_segments(plain_root):
    root, machine = plain_root
    with open(os.path.join(root, "proc", "kcore"), "rb") as handle:
        blob = handle.read()
    e_type, e_machine, phoff, phnum = elf64.parse_header(blob)
    assert (e_type, e_machine) == (elf64.ET_CORE, elf64.EM_X86_64)
    segments = elf64.read_segments(lambda o, n: blob[o:o + n], phoff, phnum)
    assert segments[0].type == elf64.PT_NOTE
    notes = elf64.parse_notes(blob[segments[0].offset:segments[0].offset + segments[0].filesz])
    assert notes[0].name == b"VMCOREINFO" and b"OSRELEASE=" in notes[0].desc
    loads = [s for s in segments if s.type == elf64.PT_LOAD]
    for segment, (kind, vaddr, paddr, size) in zip(loads, machine.kcore_segments()):
        assert segment.vaddr == vaddr and segment.memsz == size
        if paddr is None:
            assert segment.paddr == elf64.NO_PADDR
        else:
            assert segment.paddr == paddr
            assert blob[segment.offset:segment.offset + size] == machine.contents(paddr, paddr + size)


def test_module_behaviour_and_faults():
    machine = Machine(seed=2, ram_size=8 << 20)
    r = machine.ram[1]
    bad = r.start + 4 * 4096
    device = EmulatedMemory(machine=machine, faults=Faults(eio_pages=frozenset({bad})))
    buf = memoryview(bytearray(1 << 20))
    assert device.readinto(r.start, buf) == 4 * 4096, "runs into a bad page: short count"
    with pytest.raises(HoleError) as caught:
        device.readinto(bad + 100, buf)
    assert caught.value.errno == errno.EIO and caught.value.address == bad + 100
    with pytest.raises(HoleError) as caught:
        device.readinto(r.end, buf)
    assert caught.value.errno == errno.ENXIO
    assert device.readinto(machine.ram[-1].end, buf) == 0, "end of device"
    count = device.readinto(r.end - 10, buf)
    assert count == 10 and bytes(buf[:10]) == machine.contents(r.end - 10, r.end)

    flaky = EmulatedMemory(machine=machine, faults=Faults(short_every=1, eintr_every=2))
    assert flaky.readinto(r.start + 5, buf) == 4096 - 5
    with pytest.raises(InterruptedError):
        flaky.readinto(r.start, buf)


def test_strict_devmem_behaviour():
    machine = Machine(seed=2, ram_size=8 << 20)
    device = EmulatedMemory(machine=machine, behaviour="strict-devmem")
    buf = memoryview(bytearray(8192))
    assert device.readinto(0x2000, buf) == 8192 and bytes(buf) == bytes(8192), "low RAM reads as zeros"
    assert device.readinto(0xF0000, buf[:4096]) == 4096 and bytes(buf[:4096]) != bytes(4096), "ROM is real"
    for address, code in ((machine.ram[1].start + 0x100000, errno.EPERM),
                          (machine.address_space_end, errno.EFAULT)):
        with pytest.raises(HoleError) as caught:
            device.readinto(address, buf)
        assert caught.value.errno == code
    # one refused page fails the whole read, even when it starts in the readable first MiB
    with pytest.raises(HoleError):
        device.readinto(0x100000 - 4096, buf)


def test_emulator_command_writes_a_root(tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO)
    done = subprocess.run([sys.executable, "-m", "emulator.cli", "--seed", "4", "--ram", "6m", "--out",
                           str(tmp_path), "--strict-devmem", "--eio-pages", "0x200000"],
                          capture_output=True, env=env)
    assert done.returncode == 0, done.stderr
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert truth["strict_devmem"] and truth["faults"]["eio_pages"] == [0x200000]
    assert "CONFIG_STRICT_DEVMEM=y" in (tmp_path / "boot" / "config-6.1.0-emulated").read_text()
    bad = subprocess.run([sys.executable, "-m", "emulator.cli", "--ram", "1k", "--out", str(tmp_path / "x")],
                         capture_output=True, env=env)
    assert bad.returncode != 0 and bad.stderr.count(b"\n") == 1
