"""The structured formats, byte for byte: golden LiME and ELF headers for a tiny hand-made layout,
zero-filled pages, padded sparseness, -s capping, and the CLI's format options against the truth."""

from __future__ import annotations

import errno
import os
import struct
import subprocess
import sys

import pytest

from conftest import REPO, expected_ram_walk, map_lines, run_main
from emulator.device import EmulatedMemory, Faults
from emulator.machine import Machine
from emulator.rootfs import write_root
from memdump import elf64
from memdump.errors import HoleError, UsageError
from memdump.facts import NO_FACTS, MachineFacts
from memdump.formats import plan_regions, writer_for
from memdump.sources.kcore import host_facts
from memdump.host import Host
from memdump.iomem import Range
from memdump.sink import Sink
from memdump.sources.base import USABLE, DevMemory, Probe
from memdump.walk import Hole, RegionWalk

# -- a tiny machine whose every byte the test spells out ---------------------------------------------

R1 = (0x1000, 0x3000)  # two pages
R2 = (0x5000, 0x5800)  # half a page
PATTERN1 = bytes((i * 7 + 3) & 0xFF for i in range(R1[1] - R1[0]))
PATTERN2 = bytes((i * 13 + 1) & 0xFF for i in range(R2[1] - R2[0]))


class TinyMemory(DevMemory):
    """Two ranges of known bytes; pages in ``bad`` fail with EIO; reads stop at page boundaries
    so a bad page costs only itself."""

    name = "tiny"

    def __init__(self, host: Host, bad=(), patch: dict[int, bytes] | None = None):
        super().__init__(host)
        self.bad = set(bad)
        self.memory = {R1[0]: bytearray(PATTERN1), R2[0]: bytearray(PATTERN2)}
        for address, blob in (patch or {}).items():
            base = R1[0] if R1[0] <= address < R1[1] else R2[0]
            self.memory[base][address - base:address - base + len(blob)] = blob

    @classmethod
    def probe(cls, host, kernel=False):
        return Probe(cls.name, USABLE, "test")

    def ranges(self):
        return [Range(*R1), Range(*R2)]

    def readinto(self, address, view):
        for start, blob in self.memory.items():
            if start <= address < start + len(blob):
                page = address - address % 4096
                if page in self.bad:
                    raise HoleError(self.name, address, errno.EIO)
                end = min(address + len(view), start + len(blob), page + 4096)
                view[:end - address] = blob[address - start:end - start]
                return end - address
        raise HoleError(self.name, address, errno.EFAULT)


def dump_tiny(tmp_path, fmt, meta=NO_FACTS, bad=(), limit=0, patch=None):
    source = TinyMemory(Host(str(tmp_path)), bad, patch)
    path = tmp_path / f"tiny.{fmt}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        sink = Sink(fd)
        writer = writer_for(fmt, sink, plan_regions(source.ranges(), limit), meta)
        walk = RegionWalk(source, writer, page_size=4096, read_size=1 << 20)
        result = walk.run()
        sink.close()
    finally:
        os.close(fd)
    return path.read_bytes(), result


def lime_header(start: int, inclusive_end: int) -> bytes:
    return struct.pack("<IIQQ8s", 0x4C694D45, 1, start, inclusive_end, b"\0" * 8)


def test_lime_golden_bytes(tmp_path):
    image, result = dump_tiny(tmp_path, "lime")
    # the first header spelled out: "EMiL", version 1, start 0x1000, inclusive end 0x2fff, 8 zeros
    first = (b"EMiL" + b"\x01\x00\x00\x00" + b"\x00\x10\x00\x00\x00\x00\x00\x00"
             + b"\xff\x2f\x00\x00\x00\x00\x00\x00" + b"\x00" * 8)
    assert first == lime_header(0x1000, 0x2FFF)
    assert image == first + PATTERN1 + lime_header(0x5000, 0x57FF) + PATTERN2
    assert result.holes == [] and result.regions == [Range(*R1), Range(*R2)]


def test_elf_golden_bytes(tmp_path):
    desc = b"OSRELEASE=6.1.0\n"  # 16 bytes: no padding after it
    meta = MachineFacts(vmcoreinfo=desc, direct_map_base=0xFFFF888000000000)
    image, _ = dump_tiny(tmp_path, "elf", meta)
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8
    ehdr = ident + struct.pack("<HHIQQQIHHHHHH", 4, 62, 1, 0, 64, 0, 0, 64, 56, 3, 0, 0, 0)
    note = struct.pack("<III", 11, 16, 0) + b"VMCOREINFO\0\0" + desc
    note_offset = 64 + 3 * 56
    phdr = struct.Struct("<IIQQQQQQ")
    phdrs = (phdr.pack(4, 0, note_offset, 0, 0, len(note), len(note), 0)
             + phdr.pack(1, 7, 0x1000, 0xFFFF888000001000, 0x1000, 0x2000, 0x2000, 0)
             + phdr.pack(1, 7, 0x3000, 0xFFFF888000005000, 0x5000, 0x800, 0x800, 0))
    head = ehdr + phdrs + note
    assert len(head) == 272
    assert image == head + b"\0" * (0x1000 - 272) + PATTERN1 + PATTERN2


def test_elf_without_vmcoreinfo_or_direct_map(tmp_path):
    image, _ = dump_tiny(tmp_path, "elf")
    phdr = struct.Struct("<IIQQQQQQ")
    table = image[64:64 + 3 * 56]
    assert phdr.unpack_from(table, 0) == (4, 0, 232, 0, 0, 0, 0, 0)
    assert phdr.unpack_from(table, 56) == (1, 7, 0x1000, 0, 0x1000, 0x2000, 0x2000, 0)
    assert phdr.unpack_from(table, 112) == (1, 7, 0x3000, 0, 0x5000, 0x800, 0x800, 0)
    assert image[0x1000:] == PATTERN1 + PATTERN2


def test_padded_golden_bytes(tmp_path):
    image, _ = dump_tiny(tmp_path, "padded")
    assert image == b"\0" * 0x1000 + PATTERN1 + b"\0" * 0x2000 + PATTERN2


@pytest.mark.parametrize("fmt", ["padded", "lime", "elf"])
def test_unreadable_page_is_zero_filled_and_recorded(tmp_path, fmt):
    image, result = dump_tiny(tmp_path, fmt, bad={0x2000})
    want1 = PATTERN1[:0x1000] + b"\0" * 0x1000
    if fmt == "lime":
        assert image == lime_header(0x1000, 0x2FFF) + want1 + lime_header(0x5000, 0x57FF) + PATTERN2
    elif fmt == "padded":
        assert image == b"\0" * 0x1000 + want1 + b"\0" * 0x2000 + PATTERN2
    else:
        assert image[0x1000:] == want1 + PATTERN2
    assert result.holes == [Hole(0x2000, 0x3000, "EIO")]


def test_partial_last_page_failure_stays_inside_its_region(tmp_path):
    image, result = dump_tiny(tmp_path, "lime", bad={0x5000})
    assert image == lime_header(0x1000, 0x2FFF) + PATTERN1 + lime_header(0x5000, 0x57FF) + b"\0" * 0x800
    assert result.holes == [Hole(0x5000, 0x5800, "EIO")]


def test_size_limit_counts_memory_bytes(tmp_path):
    image, result = dump_tiny(tmp_path, "lime", limit=0x2400)
    assert image == lime_header(0x1000, 0x2FFF) + PATTERN1 + lime_header(0x5000, 0x53FF) + PATTERN2[:0x400]
    assert plan_regions([Range(*R1), Range(*R2)], 0x1800) == [Range(0x1000, 0x2800)]
    assert plan_regions([Range(*R1), Range(*R2)], 0) == [Range(*R1), Range(*R2)]


def test_vmcoreinfo_read_through_the_source(tmp_path):
    """/sys/kernel/vmcoreinfo names the note's physical address and size; the note is read from
    memory through the source itself."""
    desc = b"OSRELEASE=6.1.0-test\nPAGESIZE=4096\n"
    note = elf64.pack_note(elf64.Note(b"VMCOREINFO", 0, desc))
    (tmp_path / "sys" / "kernel").mkdir(parents=True)
    (tmp_path / "sys" / "kernel" / "vmcoreinfo").write_text(f"{0x1010:x} {len(note) + 64:x}\n")
    source = TinyMemory(Host(str(tmp_path)), patch={0x1010: note + bytes(64)})
    meta = host_facts(source)
    assert meta.vmcoreinfo == desc and meta.record()["vmcoreinfo"] == "/sys/kernel/vmcoreinfo"
    assert meta.direct_map_base is None  # no /proc/kcore under this root
    source.bad = {0x1000}
    remarks = []
    meta = host_facts(source, lambda level, text: remarks.append(text))
    assert meta.vmcoreinfo is None and any("EIO" in text for text in remarks)


def test_writer_refuses_overlapping_or_empty_regions(tmp_path):
    fd = os.open(tmp_path / "x", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with pytest.raises(UsageError):
            writer_for("lime", Sink(fd), [Range(0, 0x2000), Range(0x1000, 0x3000)])
        with pytest.raises(UsageError):
            writer_for("elf", Sink(fd), [Range(0x1000, 0x1000)])
        with pytest.raises(UsageError):
            writer_for("qcow", Sink(fd), [Range(0, 1)])
    finally:
        os.close(fd)


# -- the CLI on an emulated machine ------------------------------------------------------------------

@pytest.fixture(scope="module")
def machine_root(tmp_path_factory):
    machine = Machine(seed=11, ram_size=8 << 20)
    root = str(tmp_path_factory.mktemp("formats-root"))
    write_root(machine, root)
    return root, machine


def padded_truth(machine: Machine, bad=frozenset()) -> bytes:
    """The padded image the truth implies: RAM bytes at their addresses, zeros elsewhere."""
    image = bytearray(machine.ram[-1].end)
    for r in machine.ram:
        image[r.start:r.end] = machine.contents(r.start, r.end)
    for page in bad:
        image[page:page + machine.page_size] = bytes(len(image[page:page + machine.page_size]))
    return bytes(image)


def lime_truth(machine: Machine) -> bytes:
    return b"".join(lime_header(r.start, r.end - 1) + machine.contents(r.start, r.end) for r in machine.ram)


def sparse_supported(directory) -> bool:
    probe = os.path.join(directory, "sparse-probe")
    with open(probe, "wb") as handle:
        handle.truncate(16 << 20)
    try:
        return os.stat(probe).st_blocks * 512 < 1 << 20
    finally:
        os.unlink(probe)


def test_raw_stays_the_default_and_byte_identical(machine_root, capfdbinary, tmp_path):
    root, machine = machine_root
    want_data, want_regions = expected_ram_walk(machine)
    code, out, err = run_main(capfdbinary, "--root", root, "--source", "emulator", "-m", "-")
    assert code == 0 and out == want_data and err == map_lines(want_regions)
    code, out, err = run_main(capfdbinary, "--root", root, "--source", "emulator", "--format", "raw",
                              "-m", "-", "--manifest", str(tmp_path / "m.json"), "--hash", "md5")
    assert code == 0 and out == want_data and err == map_lines(want_regions)


@pytest.mark.parametrize("source", ["emulator", "devmem"])
def test_padded_file_is_sparse_and_equals_the_truth(machine_root, capfdbinary, tmp_path, source):
    root, machine = machine_root
    out = tmp_path / "image.padded"
    code, _, err = run_main(capfdbinary, "--root", root, "--source", source, "--format", "padded",
                            "-o", str(out), "-m", str(tmp_path / "map"))
    assert code == 0, err
    assert out.read_bytes() == padded_truth(machine)
    assert (out.stat().st_mode & 0o777) == 0o600
    # for structured formats the map lists the regions: the RAM ranges themselves
    assert (tmp_path / "map").read_text() == map_lines((r.start, r.end) for r in machine.ram)
    if sparse_supported(tmp_path):
        gaps = machine.ram[-1].end - machine.ram_bytes
        assert out.stat().st_blocks * 512 <= machine.ram_bytes + 8 * machine.page_size * len(machine.ram)
        assert gaps > 0


@pytest.mark.parametrize("fmt", ["padded", "lime", "elf"])
def test_every_format_streams_to_a_pipe(machine_root, tmp_path, fmt):
    root, machine = machine_root
    env = dict(os.environ, PYTHONPATH=REPO)
    done = subprocess.run(f"{sys.executable} -m memdump --root {root} --source emulator --format {fmt} | cat",
                          shell=True, capture_output=True, env=env, timeout=60)
    assert done.returncode == 0 and done.stderr == b""
    image = done.stdout
    if fmt == "padded":
        assert image == padded_truth(machine)
    elif fmt == "lime":
        assert image == lime_truth(machine)
    else:
        assert image[-machine.ram_bytes:] == machine.truth_ram_image()


def test_lime_to_a_file_by_zero_copy_equals_the_truth(machine_root, capfdbinary, tmp_path):
    """devmem is a file: without a digest to compute the bytes move by sendfile."""
    root, machine = machine_root
    out = tmp_path / "image.lime"
    code, _, err = run_main(capfdbinary, "--root", root, "--source", "devmem", "--format", "lime", "-o", str(out))
    assert code == 0, err
    assert out.read_bytes() == lime_truth(machine)


def test_size_limit_through_the_cli(machine_root, capfdbinary, tmp_path):
    root, machine = machine_root
    limit = machine.ram[0].size + 3 * 4096 + 100
    out = tmp_path / "image.lime"
    code, _, err = run_main(capfdbinary, "--root", root, "--source", "emulator", "--format", "lime",
                            "-s", str(limit), "-o", str(out))
    assert code == 0, err
    first, second = machine.ram[0], machine.ram[1]
    assert out.read_bytes() == (lime_header(first.start, first.end - 1) + machine.contents(first.start, first.end)
                                + lime_header(second.start, second.start + 3 * 4096 + 100 - 1)
                                + machine.contents(second.start, second.start + 3 * 4096 + 100))


def test_faulty_pages_become_zeros_in_every_format(tmp_path, capfdbinary):
    machine = Machine(seed=5, ram_size=6 << 20)
    last = machine.ram[-1]
    bad = frozenset({machine.ram[1].start, machine.ram[1].start + 5 * 4096, last.end - last.end % 4096})
    root = str(tmp_path / "root")
    write_root(machine, root, faults=Faults(eio_pages=bad))
    want = padded_truth(machine, bad)
    for fmt in ("padded", "lime", "elf"):
        out = tmp_path / f"image.{fmt}"
        code, _, err = run_main(capfdbinary, "--root", root, "--source", "emulator", "--format", fmt, "-o", str(out))
        assert code == 0, err
        blob = out.read_bytes()
        if fmt == "padded":
            assert blob == want
        else:
            body = b"".join(want[r.start:r.end] for r in machine.ram)
            if fmt == "elf":
                assert blob[-len(body):] == body
            else:
                assert blob == b"".join(lime_header(r.start, r.end - 1) + want[r.start:r.end] for r in machine.ram)


@pytest.mark.parametrize("args, message", [
    (["--format", "lime", "--scan"], "--scan writes the original raw stream only"),
    (["--format", "padded", "-k"], "-k works with --format raw"),
    (["--format", "tar"], "--format"),
])
def test_bad_format_combinations_are_one_line(machine_root, capfdbinary, tmp_path, args, message):
    root, _ = machine_root
    code, out, err = run_main(capfdbinary, "--root", root, "--source", "emulator", "-o", str(tmp_path / "x"), *args)
    assert code == 2 and out == b"" and message in err and err.count("\n") == 1
    assert "Traceback" not in err


def test_emulator_source_on_the_real_root_reads_no_host_files(capfdbinary, tmp_path):
    """The built-in emulator is a made-up machine: its ELF must not borrow the real host's kcore."""
    source = EmulatedMemory()
    meta = source.machine_facts()
    assert meta == NO_FACTS and meta.record() == {"vmcoreinfo": None, "direct_map_base": None}
