"""Unit tests of the real-kernel tier's own machinery (no QEMU, no root): the output readers and
comparison, the initramfs writer, the module dependency order."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import compare  # noqa: E402
import guest  # noqa: E402

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
        return compare.compare(compare.read_raw(tmp_path / "dump.out", tmp_path / "dump.map", regions),
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


# ---------------------------------------------------------------------------------------------
# the structured formats' readers: images built here from the formats' definitions


LIME = struct.Struct("<IIQQ8s")


def lime_image(ram, regions, magic=0x4C694D45, trailing=b""):
    return b"".join(LIME.pack(magic, 1, s, e - 1, bytes(8)) + bytes(ram[s:e]) for s, e in regions) + trailing


def elf_image(ram, regions, shift=0xFFFF888000000000, note=b"", equal=True):
    """ELF64 core: header, PT_NOTE + one PT_LOAD per region, note, the regions' bytes."""
    phnum = 1 + len(regions)
    offset = 64 + 56 * phnum + len(note)
    headers, blobs = [struct.pack("<IIQQQQQQ", 4, 0, 64 + 56 * phnum, 0, 0, len(note), len(note), 0)], []
    for s, e in regions:
        memsz = e - s if equal else e - s + PAGE
        headers.append(struct.pack("<IIQQQQQQ", 1, 7, offset, shift + s, s, e - s, memsz, 0))
        blobs.append(bytes(ram[s:e]))
        offset += e - s
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    ehdr = struct.pack("<16sHHIQQQIHHHHHH", ident, 4, 62, 1, 0, 64, 0, 0, 64, 56, phnum, 0, 0, 0)
    return ehdr + b"".join(headers) + note + b"".join(blobs)


def vmcoreinfo_note(text=b"OSRELEASE=6.1.0-56-amd64\n"):
    name = b"VMCOREINFO\0"
    pad = lambda b: b + bytes(-len(b) % 4)  # noqa: E731
    return struct.pack("<III", len(name), len(text), 0) + pad(name) + pad(text)


def padded_image(ram, regions, size=None):
    image = bytearray(size or regions[-1][1])
    for s, e in regions:
        image[s:e] = ram[s:e]
    return bytes(image)


def check_structured(tmp_path, fmt, image, regions, **kw):
    (tmp_path / f"dump.{fmt}").write_bytes(image)
    ram = compare.GuestRam(tmp_path / "ram")
    try:
        read = compare.READERS[fmt](tmp_path / f"dump.{fmt}", None, regions)
        return compare.compare(read, ram, regions, {"kernel code": (0x200000, 0x300000)},
                               unreadable_as_zeros=True, **kw)
    finally:
        ram.close()


@pytest.mark.parametrize("fmt, build", [("lime", lime_image), ("elf", elf_image), ("padded", padded_image)])
def test_structured_readers_accept_a_faithful_image(machine, fmt, build):
    tmp_path, ram, regions = machine
    verdict = check_structured(tmp_path, fmt, build(ram, regions), regions, zero_filled=set(),
                               zero_filled_expected=set())
    assert verdict.failed() == [] and verdict.percent == 100.0
    assert verdict.regions == regions


@pytest.mark.parametrize("image, words", [
    (lambda ram, r: lime_image(ram, r, magic=0x4C694D46), "magic"),
    (lambda ram, r: lime_image(ram, r, trailing=b"\0" * 8), "less than a header"),
    (lambda ram, r: lime_image(ram, r)[:-1], "the file ends first"),
    (lambda ram, r: lime_image(ram, list(reversed(r))), "out of order"),
    (lambda ram, r: lime_image(ram, [(0x1000, 0x3000), (0x2000, 0x4000)]), "overlapping"),
])
def test_lime_reader_refuses_damage(machine, image, words):
    tmp_path, ram, regions = machine
    with pytest.raises(ValueError, match=words):
        check_structured(tmp_path, "lime", image(ram, regions), regions)


def test_lime_end_is_inclusive(machine):
    """A reader that took the end as exclusive would be one byte short per record and misplace
    every following header."""
    tmp_path, ram, regions = machine
    image = bytearray(lime_image(ram, regions))
    struct.pack_into("<Q", image, 16, regions[0][1])  # end written as exclusive
    with pytest.raises(ValueError):
        check_structured(tmp_path, "lime", bytes(image), regions)


@pytest.mark.parametrize("image, words", [
    (lambda ram, r: b"\x7fELF\x01" + elf_image(ram, r)[5:], "ELF64"),
    (lambda ram, r: elf_image(ram, r, equal=False), "unequal"),
    (lambda ram, r: elf_image(ram, list(reversed(r))), "out of order"),
    (lambda ram, r: elf_image(ram, r)[:-PAGE], "beyond the file"),
])
def test_elf_reader_refuses_damage(machine, image, words):
    tmp_path, ram, regions = machine
    with pytest.raises(ValueError, match=words):
        check_structured(tmp_path, "elf", image(ram, regions), regions)


def test_elf_notes_and_direct_map(machine):
    tmp_path, ram, regions = machine
    (tmp_path / "core").write_bytes(elf_image(ram, regions, note=vmcoreinfo_note()))
    assert compare.elf_notes(tmp_path / "core") == {"VMCOREINFO": b"OSRELEASE=6.1.0-56-amd64\n"}
    assert compare.elf_direct_map(tmp_path / "core") == {0xFFFF888000000000}
    verdict = check_structured(tmp_path, "elf", elf_image(ram, regions, note=vmcoreinfo_note()), regions)
    assert verdict.failed() == []


def test_padded_reader_finds_bytes_outside_ram(machine):
    tmp_path, ram, regions = machine
    image = bytearray(padded_image(ram, regions))
    image[0xA0000] = 1  # in the hole between the RAM ranges (device memory must never be read)
    with pytest.raises(ValueError, match="0xa0000, outside System RAM"):
        check_structured(tmp_path, "padded", bytes(image), regions)
    with pytest.raises(ValueError, match="RAM ends at"):
        check_structured(tmp_path, "padded", padded_image(ram, regions)[:-1], regions)


def test_padded_reader_reads_sparse_files(machine):
    tmp_path, ram, regions = machine
    path = tmp_path / "dump.padded"
    with open(path, "wb") as f:  # holes, as memdump writes them to a file
        for s, e in regions:
            f.seek(s)
            f.write(ram[s:e])
        f.truncate(regions[-1][1] + 0x100000)
    assert [s for s, _ in compare.data_extents(path, path.stat().st_size)]
    got = list(compare.read_padded(path, None, regions))
    assert [(s, len(d)) for s, d in got] == [(s, e - s) for s, e in regions]


def test_structured_coverage_and_zero_filled_pages(machine):
    tmp_path, ram, regions = machine
    offline = 0x900000
    ram_now = bytearray(ram)
    image_ram = bytearray(ram)
    image_ram[offline:offline + PAGE] = bytes(PAGE)  # zero-filled by the dumper
    ok = check_structured(tmp_path, "lime", lime_image(image_ram, regions), regions,
                          unreadable={offline}, zero_filled={offline}, zero_filled_expected={offline})
    assert "zero-filled pages (manifest)" not in " ".join(ok.failed())
    # the dumper zero-filled a page without saying so, and said so about one it did not fill
    image_ram[0x500000:0x500000 + PAGE] = bytes(PAGE)
    listed_nonzero = check_structured(tmp_path, "lime", lime_image(image_ram, regions), regions,
                                      unreadable={offline}, zero_filled={offline, 0x600000},
                                      zero_filled_expected={offline})
    failed = " ".join(listed_nonzero.failed())
    assert "zero-filled pages (manifest)" in failed and "0x600000" in failed
    assert listed_nonzero.checks["unlisted zero pages"].startswith("ok 1 zero in the output")
    # a silent zero-fill of a whole read is not RAM churn
    image_ram[0x600000:0x700000] = bytes(0x100000)
    silent = check_structured(tmp_path, "lime", lime_image(image_ram, regions), regions,
                              unreadable={offline}, zero_filled={offline}, zero_filled_expected={offline})
    assert silent.checks["unlisted zero pages"].startswith("FAIL 257 zero in the output")
    # a structured image must hold the offline page, as zeros
    missing = [(0x1000, 0x9FC00), (0x100000, offline), (offline + PAGE, 0xC00000)]
    short = check_structured(tmp_path, "lime", lime_image(ram_now, missing), regions, unreadable={offline})
    assert "coverage" in " ".join(short.failed())
    held = check_structured(tmp_path, "lime", lime_image(ram_now, regions), regions, unreadable={offline})
    assert "unreadable pages as zeros" in " ".join(held.failed())


def test_manifest_facts(tmp_path):
    (tmp_path / "m.json").write_text(json.dumps({
        "complete": True, "source": "kmod", "format": "lime", "regions": [
            {"start": 0x1000, "end": 0x9FC00, "size": 0, "offset": 0}],
        "zero_filled": [{"start": 0x2000, "end": 0x3800, "size": 0x1800, "pages": 2, "reason": "EIO"}],
        "skipped": []}))
    facts = compare.manifest_facts(tmp_path / "m.json")
    assert facts["zero_filled"] == {0x2000, 0x3000} and facts["regions"] == [(0x1000, 0x9FC00)]


# ---------------------------------------------------------------------------------------------
# memdump's own writers against these readers (a disagreement is a bug on one side)


@pytest.mark.parametrize("fmt", ["padded", "lime", "elf"])
def test_memdump_images_pass_the_independent_readers(fmt, root_factory, tmp_path, capfdbinary):
    from conftest import run_main

    root, machine = root_factory("plain", kmod=True)
    ranges = [(r.start, r.end) for r in machine.ram]
    with open(tmp_path / "ram", "wb") as f:
        f.truncate(machine.address_space_end)
        for s, e in ranges:
            f.seek(s)
            f.write(machine.contents(s, e))
    out, manifest = tmp_path / f"image.{fmt}", tmp_path / "image.json"
    code, _, err = run_main(capfdbinary, "--root", root, "--source", "kmod", "--format", fmt,
                            "-o", str(out), "--manifest", str(manifest))
    assert code == 0, err
    facts = compare.manifest_facts(manifest)
    ram = compare.GuestRam(tmp_path / "ram")
    try:
        code_range = machine.kernel_code()
        verdict = compare.compare(compare.READERS[fmt](out, None, ranges), ram, ranges,
                                  {"kernel code": (code_range.start, code_range.end)},
                                  unreadable_as_zeros=True, zero_filled=facts["zero_filled"],
                                  zero_filled_expected=set(), min_percent=100.0)
    finally:
        ram.close()
    assert verdict.failed() == [] and facts["complete"] and facts["regions"] == ranges


def test_whole_pages_is_what_kcore_publishes():
    assert compare.whole_pages([(0x1000, 0x9FC00), (0x100000, 0x3FFE0000), (0x5000, 0x5800)]) == [
        (0x1000, 0x9F000), (0x100000, 0x3FFE0000)]


# ---------------------------------------------------------------------------------------------
# the job checks of run_tier.py, on files as the guest leaves them


def job_files(tmp_path, name="job", **contents):
    import run_tier

    for ext, data in contents.items():
        (tmp_path / f"{name}.{ext}").write_bytes(data if isinstance(data, bytes) else data.encode())
    return run_tier.Files(tmp_path, name)


SOURCES_OUT = """kmod      usable    memdump.ko 0.1.0: 3 System RAM ranges, 1279 MiB
devmem    limited   CONFIG_STRICT_DEVMEM=y: the kernel refuses RAM above 1 MiB (EPERM) and shows the first MiB's RAM as zeros; use --source kmod or kcore
kmem      unusable  serves kernel virtual memory only (-k)
kcore     usable    3 physical RAM ranges, 1279 MiB
"""


def test_check_sources(tmp_path):
    import run_tier

    assert run_tier.check_sources(job_files(tmp_path, out=SOURCES_OUT)) == []
    usable = SOURCES_OUT.replace("devmem    limited ", "devmem    usable  ")
    assert "devmem" in run_tier.check_sources(job_files(tmp_path, out=usable))[0]


def test_check_devmem_scan(tmp_path):
    import run_tier

    mib = bytes(range(256)) * 4096
    err = "memdump: warning: devmem: CONFIG_STRICT_DEVMEM=y: ...\nmemdump: source devmem\n"
    good = dict(out=mib, dd=mib, orig=mib, map="0x0 0x100000\n", err=err)
    assert run_tier.check_devmem_scan(job_files(tmp_path, **good)) == []
    bad = dict(good, dd=mib[:-1] + b"\1", map="0x0 0xa0000\n")
    failures = run_tier.check_devmem_scan(job_files(tmp_path, **bad))
    assert len(failures) == 2 and "0xfffff" in failures[0] and "map" in failures[1]


def test_module_checks(tmp_path):
    import run_tier

    status = ("kernel:    6.1.0-56-amd64\nmodule:    loaded (version 0.1.0, users 0, taint OE)\n"
              "device:    /dev/memdump character device 10:124, mode 0400, owner 0:0 (ok)\n"
              "installed: none for 6.1.0-56-amd64\n")
    files = job_files(tmp_path, out=status, state="module=loaded\nnode=present\n",
                      err="memdump: module memdump already loaded: using it (it stays loaded)\n")
    assert run_tier.status_says("loaded", "mode 0400, owner 0:0 (ok)")(files) == []
    assert run_tier.status_says("not loaded", "missing")(files) != []
    assert run_tier.module_state("loaded")(files) == []
    assert run_tier.module_state("absent")(files) != []
    assert run_tier.says("err", "already loaded")(files) == []
    assert run_tier.all_of(run_tier.says("err", "unloaded"), run_tier.module_state("absent"))(files) != []


def test_guest_script_runs_every_job_in_order(tmp_path):
    import run_tier

    ctx = run_tier.Context("6.1.0-56-amd64", tmp_path, "/usr/bin/python3", "/repo", False)
    boot = run_tier.Boot("main", tmp_path / "main", "max", "copy_mc_to_kernel", 10, 1, True,
                         list(run_tier.JOBS))
    script = run_tier.guest_script(ctx, boot, 1, 10)
    positions = [script.index(f"say JOB:{job.name}\n") for job in run_tier.JOBS]
    assert positions == sorted(positions)
    assert "insmod /results/lime.ko path=/results/lime-peer.out format=lime timeout=0" in script
    assert f"--manifest {tmp_path}/main/cli-kmod-elf.json" in script
    assert f"--load-module {tmp_path}/main/memdump.ko" in script
    names = {job.name for job in run_tier.JOBS}
    assert {f"cli-{s}-{f}" for s in ("kmod", "kcore") for f in ("padded", "lime", "elf")} <= names


def test_limits_follow_the_calibration_and_the_job_size():
    """A machine at half the speed gets twice the limits; a padded job's limit counts the holes
    it hashes, a partial job's only its 64 MiB."""
    import run_tier

    iomem = ("00001000-0009fbff : System RAM\n00100000-3fffffff : System RAM\n"
             "100000000-10fffffff : System RAM (virtio_mem)\n")
    jobs = {job.name: job for job in run_tier.JOBS}
    fast = run_tier.Calibration.from_times(4.0, 12.0)   # 16 MiB in 4 s, 144 MiB in 12 s
    slow = run_tier.Calibration.from_times(8.0, 24.0)
    assert abs(fast.per_mib - 12.0 / 144) < 1e-9 and abs(fast.startup - 3.0) < 1e-9
    # a busy machine can time the small dump slower than the large one: never a cost of ~0
    noisy = run_tier.Calibration.from_times(10.6, 9.2)
    assert abs(noisy.per_mib - 9.2 / 144) < 1e-9 and noisy.startup == 10.6
    limits = {c: run_tier.job_limits(run_tier.limits_script(list(jobs.values()), c, iomem))
              for c in (fast, slow)}
    name = jobs["cli-kmod-padded"].limit_name
    ram_mib = ((0x9fc00 - 0x1000) + (0x40000000 - 0x100000) + (1 << 28)) / (1 << 20)
    span_mib = 0x110000000 / (1 << 20)
    assert limits[fast][name] == int(run_tier.LIMIT_MARGIN * (3.0 + span_mib * 12.0 / 144) + 0.999)
    assert limits[slow][name] >= 2 * limits[fast][name] - 1
    lime = jobs["cli-kmod-lime"].limit_name
    assert limits[fast][lime] == int(run_tier.LIMIT_MARGIN * (3.0 + ram_mib * 12.0 / 144) + 0.999)
    partial = jobs["load-module-kept"].limit_name
    assert limits[fast][partial] == run_tier.LIMIT_FLOOR
    uncalibrated = run_tier.job_limits(run_tier.limits_script(list(jobs.values()), None, iomem))
    assert set(uncalibrated.values()) == {run_tier.UNCALIBRATED_LIMIT}


def test_guest_script_times_each_job_by_its_own_limit(tmp_path):
    import run_tier

    ctx = run_tier.Context("6.1.0-56-amd64", tmp_path, "/usr/bin/python3", "/repo", False)
    boot = run_tier.Boot("main", tmp_path / "main", "max", "copy_mc_to_kernel", 10, 1, True,
                         list(run_tier.JOBS))
    script = run_tier.guest_script(ctx, boot, 1, 10)
    calibrated = script.index("say CALIBRATED\nwait_ack calibrate\n. $R/limits.sh\n")
    assert script.index("-s 16m") < script.index("-s 144m") < calibrated
    for job in run_tier.JOBS:
        assert script.index(f"timeout ${job.limit_name} ") > calibrated
    assert "timeout 180" not in script


def test_a_silent_guest_is_stopped_with_its_step_named(tmp_path):
    """The host's watchdog: no sentinel before the deadline ends the wait with the time it ran."""
    import time

    from guest import Guest, GuestConfig, GuestStalled

    cfg = GuestConfig(kver="x", workdir=tmp_path, ram_file=tmp_path / "ram")
    guest = Guest(cfg, tmp_path / "initramfs")
    guest.console.write_text("@@MD:BOOTED@@\n")
    guest.running = lambda: True
    guest.deadline = time.monotonic() + 0.3
    seen = []
    with pytest.raises(GuestStalled, match=r"no word from the guest for \d+s"):
        for event in guest.events(poll=0.01):
            seen.append(event)
    assert seen == [("BOOTED", "")]
