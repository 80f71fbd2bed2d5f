"""Volatility 3 (from PyPI) opens memdump's padded, LiME and ELF images and reads the emulator's
truth at every sampled physical address: each region's first and last pages and random ones,
with and without pages that failed (which must read as zeros). Every expected byte comes from the
emulator (Machine.contents), never from memdump's own writers."""

from __future__ import annotations

import json
import random

import pytest

pytest.importorskip("volatility3", reason="volatility3 is not installed for this Python")

from volatility3.framework import contexts, exceptions  # noqa: E402
from volatility3.framework.layers import elf as vol_elf  # noqa: E402
from volatility3.framework.layers import lime as vol_lime  # noqa: E402
from volatility3.framework.layers import physical  # noqa: E402

from conftest import run_main
from emulator.device import Faults
from emulator.machine import DIRECT_MAP_BASE, Machine
from emulator.rootfs import write_root
from memdump import elf64

PAGE = 4096


def volatility_layer(path, fmt):
    """The layer Volatility 3 reads the image through: FileLayer for padded (offset = physical
    address), LimeLayer or Elf64Layer stacked on it for LiME and ELF."""
    context = contexts.Context()
    context.config["base.location"] = "file://" + str(path)
    context.add_layer(physical.FileLayer(context, "base", "base"))
    if fmt == "padded":
        return context.layers["base"]
    layer_class = {"lime": vol_lime.LimeLayer, "elf": vol_elf.Elf64Layer}[fmt]
    context.config["memory.base_layer"] = "base"
    layer = layer_class(context, "memory", "memory")
    context.add_layer(layer)
    return layer


def samples(ranges, seed, per_region=6):
    """(address, size) pairs: every region's first and last page (partial pages as they are) and
    random pages and odd spans inside it."""
    rng = random.Random(seed)
    picked = []
    for start, end in ranges:
        first_page_end = min(end, start - start % PAGE + PAGE)
        picked.append((start, first_page_end - start))
        last_page = max(start, (end - 1) - (end - 1) % PAGE)
        picked.append((last_page, end - last_page))
        picked.append((end - 1, 1))
        for _ in range(per_region):
            address = rng.randrange(start, end)
            picked.append((address, min(rng.choice([1, 17, PAGE, 3 * PAGE + 5]), end - address)))
    return picked


def truth(machine, address, size, bad=frozenset()):
    """The emulator's bytes, with the pages that failed as zeros."""
    data = bytearray(machine.contents(address, address + size))
    for page in bad:
        lo, hi = max(page, address), min(page + PAGE, address + size)
        if lo < hi:
            data[lo - address:hi - address] = bytes(hi - lo)
    return bytes(data)


def check_layer(layer, machine, ranges, fmt, bad=frozenset(), seed=0):
    for address, size in samples(ranges, seed):
        assert layer.read(address, size) == truth(machine, address, size, bad), (fmt, hex(address), size)
    # between regions: LiME and ELF have nothing there; a padded image has zeros
    for (_, end), (start, _) in zip(ranges, ranges[1:]):
        gap = (end + PAGE - 1) // PAGE * PAGE
        if gap >= start:
            continue
        if fmt == "padded":
            assert layer.read(gap, 16) == bytes(16)
        else:
            assert not layer.is_valid(gap)
            with pytest.raises(exceptions.InvalidAddressException):
                layer.read(gap, 16)
    assert layer.maximum_address == ranges[-1][1] - 1


@pytest.fixture(scope="module")
def clean_root(tmp_path_factory):
    machine = Machine(seed=31, ram_size=8 << 20)
    root = str(tmp_path_factory.mktemp("vol-clean"))
    write_root(machine, root)
    return root, machine


@pytest.fixture(scope="module")
def faulty_root(tmp_path_factory):
    machine = Machine(seed=32, ram_size=8 << 20)
    last = machine.ram[-1]
    bad = frozenset({
        machine.ram[0].start,  # a region's first page
        machine.ram[1].start + 7 * PAGE, machine.ram[1].start + 8 * PAGE,  # two in the middle
        machine.ram[2].end - PAGE,  # a region's last page
        last.end - last.end % PAGE,  # the partial last page of RAM
    })
    root = str(tmp_path_factory.mktemp("vol-faulty"))
    write_root(machine, root, faults=Faults(eio_pages=bad))
    return root, machine, bad


def dump(capfd, root, tmp_path, fmt, source="emulator", *extra):
    out = tmp_path / f"image.{fmt}"
    manifest = tmp_path / f"image.{fmt}.json"
    code, _, err = run_main(capfd, "--root", root, "--source", source, "--format", fmt, "-o", str(out),
                            "--manifest", str(manifest), *extra)
    assert code == 0, err
    return out, json.loads(manifest.read_text())


@pytest.mark.parametrize("fmt", ["padded", "lime", "elf"])
def test_volatility_reads_the_truth(clean_root, capfdbinary, tmp_path, fmt):
    root, machine = clean_root
    out, record = dump(capfdbinary, root, tmp_path, fmt)
    ranges = [(r.start, r.end) for r in machine.ram]
    check_layer(volatility_layer(out, fmt), machine, ranges, fmt, seed=len(fmt))
    assert record["zero_filled"] == []


@pytest.mark.parametrize("fmt", ["padded", "lime", "elf"])
def test_volatility_reads_zeros_where_pages_failed(faulty_root, capfdbinary, tmp_path, fmt):
    root, machine, bad = faulty_root
    out, record = dump(capfdbinary, root, tmp_path, fmt)
    layer = volatility_layer(out, fmt)
    ranges = [(r.start, r.end) for r in machine.ram]
    check_layer(layer, machine, ranges, fmt, bad, seed=7)
    for page in bad:  # each failed page reads as zeros (to the end of its region) ...
        end = min(page + PAGE, next(e for s, e in ranges if s <= page < e))
        assert layer.read(page, end - page) == bytes(end - page)
        # ... and the next page, where it is RAM that did not fail, is intact
        after = page + PAGE
        if after not in bad and any(s <= after < e for s, e in ranges):
            assert layer.read(after, 64) == machine.contents(after, after + 64)
    # ... and the manifest names exactly those pages, zero-filled, with the reason
    recorded = set()
    for span in record["zero_filled"]:
        assert span["reason"] == "EIO"
        recorded |= set(range(span["start"] - span["start"] % PAGE, span["end"], PAGE))
    assert recorded == set(bad)
    assert record["complete"] is True


def test_volatility_reads_the_kcore_elf_with_vmcoreinfo(clean_root, capfdbinary, tmp_path):
    """Through /proc/kcore the ELF carries the kernel's VMCOREINFO note and direct-map p_vaddr."""
    root, machine = clean_root
    out, record = dump(capfdbinary, root, tmp_path, "elf", "kcore")
    ram_segments = [(p, p + size) for kind, _, p, size in machine.kcore_segments() if kind == "ram"]
    layer = volatility_layer(out, "elf")
    check_layer(layer, machine, ram_segments, "elf", seed=99)
    blob = out.read_bytes()
    _, machine_id, phoff, phnum = elf64.parse_header(blob[:64])
    assert machine_id == elf64.EM_X86_64
    segments = elf64.read_segments(lambda offset, size: blob[offset:offset + size], phoff, phnum)
    notes = [s for s in segments if s.type == elf64.PT_NOTE]
    loads = [s for s in segments if s.type == elf64.PT_LOAD]
    assert len(notes) == 1 and segments[0].type == elf64.PT_NOTE
    found = elf64.parse_notes(blob[notes[0].offset:notes[0].offset + notes[0].filesz])
    from emulator.rootfs import vmcoreinfo

    assert [(n.name, n.desc) for n in found] == [(b"VMCOREINFO", vmcoreinfo(machine).encode())]
    assert [(s.paddr, s.paddr + s.filesz) for s in loads] == ram_segments
    for segment in loads:
        assert segment.filesz == segment.memsz
        assert segment.vaddr == DIRECT_MAP_BASE + segment.paddr
    assert record["elf"] == {"vmcoreinfo": "/proc/kcore", "direct_map_base": f"{DIRECT_MAP_BASE:#x}"}


def test_volatility_reads_converted_images(clean_root, capfdbinary, tmp_path):
    """raw + map, converted, opens in Volatility just the same."""
    root, machine = clean_root
    raw = tmp_path / "image.raw"
    code, _, err = run_main(capfdbinary, "--root", root, "--source", "emulator", "-o", str(raw),
                            "-m", str(tmp_path / "image.raw.map"))
    assert code == 0, err
    ranges = [(r.start, r.end) for r in machine.ram]
    for fmt in ("padded", "lime", "elf"):
        out = tmp_path / f"converted.{fmt}"
        code, _, err = run_main(capfdbinary, "convert", str(raw), str(out), "--to", fmt)
        assert code == 0, err
        check_layer(volatility_layer(out, fmt), machine, ranges, fmt, seed=5)


def test_volatility_automagic_stackers_recognise_the_files(clean_root, capfdbinary, tmp_path):
    """Volatility's own format detection (the stackers its automagic runs) picks LiME and ELF."""
    root, machine = clean_root
    for fmt, stacker, wanted in (("lime", vol_lime.LimeStacker, vol_lime.LimeLayer),
                                 ("elf", vol_elf.Elf64Stacker, vol_elf.Elf64Layer)):
        out, _ = dump(capfdbinary, root, tmp_path, fmt)
        context = contexts.Context()
        context.config["base.location"] = "file://" + str(out)
        context.add_layer(physical.FileLayer(context, "base", "base"))
        layer = stacker.stack(context, "base")
        assert isinstance(layer, wanted)
        start = machine.ram[1].start
        assert layer.read(start, PAGE) == machine.contents(start, start + PAGE)
