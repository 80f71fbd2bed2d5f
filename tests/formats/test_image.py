"""Images read back: ``memdump info``, ``convert`` and ``verify``; round trips between formats;
damaged and truncated images reported with their offset, in one line, never a traceback."""

from __future__ import annotations

import hashlib
import json
import os
import struct

import pytest

from conftest import map_lines, run_main
from emulator.machine import DIRECT_MAP_BASE, Machine
from emulator.rootfs import vmcoreinfo, write_root
from memdump.errors import ImageError
from memdump.image import open_image

LIME = struct.Struct("<IIQQ8s")


def lime_header(start, inclusive_end, magic=0x4C694D45, version=1):
    return LIME.pack(magic, version, start, inclusive_end, b"\0" * 8)


@pytest.fixture(scope="module")
def dumps(tmp_path_factory):
    """One emulated machine dumped in every format (with maps and manifests), from the CLI."""
    machine = Machine(seed=13, ram_size=6 << 20)
    root = str(tmp_path_factory.mktemp("image-root"))
    write_root(machine, root)
    where = tmp_path_factory.mktemp("image-dumps")
    from memdump.cli import main

    made = {}
    for fmt in ("raw", "padded", "lime", "elf"):
        out = where / f"dump.{fmt}"
        with pytest.raises(SystemExit) as stop:
            main(["--root", root, "--source", "emulator", "--format", fmt, "-o", str(out),
                  "-m", str(where / f"dump.{fmt}.map"), "--manifest", str(where / f"dump.{fmt}.json")])
        assert stop.value.code == 0
        made[fmt] = out
    kcore_elf = where / "kcore.elf"
    with pytest.raises(SystemExit) as stop:
        main(["--root", root, "--source", "kcore", "--format", "elf", "-o", str(kcore_elf)])
    assert stop.value.code == 0
    made["kcore-elf"] = kcore_elf
    return machine, made


def ram_map(machine):
    return map_lines((r.start, r.end) for r in machine.ram)


def one_line_error(code, err, *needles):
    assert code != 0, err
    assert err.count("\n") == 1 and err.startswith("memdump: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


# -- info -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["raw", "padded", "lime", "elf"])
def test_info_detects_and_lists_regions(dumps, capfdbinary, fmt):
    machine, made = dumps
    code, out, err = run_main(capfdbinary, "info", "--json", str(made[fmt]))
    assert code == 0, err
    found = json.loads(out)
    assert found["format"] == fmt
    assert [(r["start"], r["end"]) for r in found["regions"]] == [(r.start, r.end) for r in machine.ram]
    assert found["memory_bytes"] == machine.ram_bytes
    assert found["file_size"] == made[fmt].stat().st_size
    if fmt in ("raw", "padded"):
        assert found["map"] == str(made[fmt]) + ".map"  # found beside the image
    code, out, err = run_main(capfdbinary, "info", str(made[fmt]))
    assert code == 0 and f"{fmt} image, {len(machine.ram)} regions" in out.decode()


def test_info_elf_shows_vmcoreinfo_and_direct_map(dumps, capfdbinary):
    machine, made = dumps
    code, out, err = run_main(capfdbinary, "info", "--json", str(made["kcore-elf"]))
    found = json.loads(out)
    assert found["vmcoreinfo"] == vmcoreinfo(machine)
    assert found["direct_map_base"] == f"{DIRECT_MAP_BASE:#x}"
    code, out, err = run_main(capfdbinary, "info", str(made["kcore-elf"]))
    assert f"OSRELEASE={machine.release}" in out.decode()


def test_info_without_a_map_is_unknown(dumps, capfdbinary, tmp_path):
    machine, made = dumps
    bare = tmp_path / "bare.img"
    bare.write_bytes(made["raw"].read_bytes())
    code, out, err = run_main(capfdbinary, "info", "--json", str(bare))
    found = json.loads(out)
    assert code == 0 and found["format"] == "unknown" and found["regions"][0]["start"] == 0
    code, out, err = run_main(capfdbinary, "info", "--json", "--map", str(made["raw"]) + ".map", str(bare))
    assert json.loads(out)["format"] == "raw"


# -- convert and round trips ----------------------------------------------------------------------------

def convert(capfd, src, dst, to, *extra):
    code, out, err = run_main(capfd, "convert", str(src), str(dst), "--to", to, *extra)
    assert code == 0, err
    return err


def truth_regions(path, fmt, machine, map_path=None):
    """``path`` read back by the real-kernel tier's own readers (tests/vm/compare.py, which share
    no code with memdump) as (start, end, bytes) per region."""
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "vm"))
    import compare

    ranges = [(r.start, r.end) for r in machine.ram]
    return [(start, start + len(span), span[0:len(span)])
            for start, span in compare.READERS[fmt](path, map_path, ranges)]


def assert_is_the_truth(path, fmt, machine, map_path=None):
    """Every RAM range of the machine, whole, with the truth's bytes, and nothing else."""
    found = truth_regions(path, fmt, machine, map_path)
    assert [(start, end) for start, end, _ in found] == [(r.start, r.end) for r in machine.ram]
    for start, end, data in found:
        assert data == machine.contents(start, end), f"{fmt} region {start:#x}-{end:#x}"


@pytest.mark.parametrize("first, second", [("lime", "elf"), ("lime", "padded"), ("lime", "raw"),
                                           ("padded", "lime"), ("padded", "elf"), ("raw", "lime"),
                                           ("raw", "elf"), ("elf", "elf")])
def test_conversions_hold_the_truth(dumps, capfdbinary, tmp_path, first, second):
    """Each conversion, and the way back, holds exactly the emulator's RAM (read by independent
    readers); the map written beside it lists the machine's RAM ranges."""
    machine, made = dumps
    middle = tmp_path / f"middle.{second}"
    convert(capfdbinary, made[first], middle, second, "--out-map", str(middle) + ".map")
    assert_is_the_truth(middle, second, machine, tmp_path / f"middle.{second}.map")
    back = tmp_path / f"back.{first}"
    convert(capfdbinary, middle, back, first, "--out-map", str(back) + ".map")
    assert_is_the_truth(back, first, machine, tmp_path / f"back.{first}.map")
    assert (tmp_path / f"back.{first}.map").read_text() == ram_map(machine)
    assert (middle.stat().st_mode & 0o777) == 0o600


def elf_body(blob: bytes, machine) -> bytes:
    return blob[-machine.ram_bytes:]


def test_elf_through_lime_keeps_regions_and_bytes_not_the_note(dumps, capfdbinary, tmp_path):
    """LiME has nowhere to keep VMCOREINFO or p_vaddr: the way back keeps the memory only."""
    machine, made = dumps
    convert(capfdbinary, made["elf"], tmp_path / "m.lime", "lime")
    convert(capfdbinary, tmp_path / "m.lime", tmp_path / "back.elf", "elf")
    with open_image(str(tmp_path / "back.elf")) as back, open_image(str(made["elf"])) as original:
        assert back.regions == original.regions
        assert original.facts().vmcoreinfo == vmcoreinfo(machine).encode()
        assert back.facts().vmcoreinfo is None and back.direct_map_base is None
    assert elf_body((tmp_path / "back.elf").read_bytes(), machine) == machine.truth_ram_image()


def test_raw_and_map_convert_to_every_format(dumps, capfdbinary, tmp_path):
    machine, made = dumps
    for fmt in ("padded", "lime", "elf"):
        out = tmp_path / f"from-raw.{fmt}"
        convert(capfdbinary, made["raw"], out, fmt, "--map", str(made["raw"]) + ".map")
        assert_is_the_truth(out, fmt, machine)
    # and memdump's own reader finds every region where its header says
    with open_image(str(tmp_path / "from-raw.lime")) as image:
        for placed in image.regions:
            assert image.read(placed.offset, placed.size) == machine.contents(placed.start, placed.end)


def test_elf_keeps_vmcoreinfo_and_vaddr_through_elf(dumps, capfdbinary, tmp_path):
    """The emulated kcore's VMCOREINFO and direct map survive ELF to ELF."""
    machine, made = dumps
    out = tmp_path / "copy.elf"
    convert(capfdbinary, made["kcore-elf"], out, "elf")
    with open_image(str(out)) as copy:
        assert copy.facts().vmcoreinfo == vmcoreinfo(machine).encode()
        assert copy.direct_map_base == DIRECT_MAP_BASE
        for placed in copy.regions:
            assert copy.read(placed.offset, placed.size) == machine.contents(placed.start, placed.end)


def test_convert_to_stdout_and_sidecar(dumps, capfdbinary, tmp_path):
    machine, made = dumps
    code, out, err = run_main(capfdbinary, "convert", str(made["lime"]), "-", "--to", "raw")
    assert code == 0 and out == machine.truth_ram_image()
    target = tmp_path / "x.padded"
    convert(capfdbinary, made["lime"], target, "padded", "--hash", "sha256")
    assert (tmp_path / "x.padded.sha256").read_text() == \
        f"{hashlib.sha256(target.read_bytes()).hexdigest()}  x.padded\n"


def test_convert_unknown_input_as_padded(dumps, capfdbinary, tmp_path):
    machine, made = dumps
    bare = tmp_path / "bare"
    bare.write_bytes(made["padded"].read_bytes())
    err = convert(capfdbinary, bare, tmp_path / "bare.lime", "lime")
    assert "converted as padded" in err
    blob = (tmp_path / "bare.lime").read_bytes()
    assert blob[:LIME.size] == lime_header(0, bare.stat().st_size - 1)


def test_convert_never_overwrites_and_leaves_nothing_on_failure(dumps, capfdbinary, tmp_path):
    machine, made = dumps
    existing = tmp_path / "exists"
    existing.write_bytes(b"precious")
    code, out, err = run_main(capfdbinary, "convert", str(made["lime"]), str(existing), "--to", "elf")
    one_line_error(code, err, "file exists")
    assert existing.read_bytes() == b"precious"
    broken = tmp_path / "broken.lime"
    broken.write_bytes(made["lime"].read_bytes()[:-100])
    code, out, err = run_main(capfdbinary, "convert", str(broken), str(tmp_path / "out.elf"), "--to", "elf",
                              "--out-map", str(tmp_path / "out.map"), "--hash", "md5")
    one_line_error(code, err, "runs past the end")
    assert sorted(os.listdir(tmp_path)) == ["broken.lime", "exists"]


# -- verify --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["raw", "padded", "lime", "elf"])
def test_verify_passes_on_the_dump_and_fails_on_a_changed_byte(dumps, capfdbinary, tmp_path, fmt):
    machine, made = dumps
    manifest = str(made[fmt]) + ".json"
    code, out, err = run_main(capfdbinary, "verify", str(made[fmt]), "--manifest", manifest)
    assert code == 0, err
    assert "sha256: OK" in out.decode() and "regions: OK" in out.decode()
    changed = tmp_path / f"changed.{fmt}"
    blob = bytearray(made[fmt].read_bytes())
    blob[-5000] ^= 0xFF
    changed.write_bytes(bytes(blob))
    code, out, err = run_main(capfdbinary, "verify", str(changed), "--manifest", manifest)
    one_line_error(code, err, "verify failed", "sha256")


def test_verify_catches_other_regions_and_bad_manifests(dumps, capfdbinary, tmp_path):
    machine, made = dumps
    record = json.loads((str(made["lime"]) + ".json") and open(str(made["lime"]) + ".json").read())
    record["regions"][0]["end"] -= 4096
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps(record))
    code, out, err = run_main(capfdbinary, "verify", str(made["lime"]), "--manifest", str(wrong))
    one_line_error(code, err, "regions differ")
    junk = tmp_path / "junk.json"
    junk.write_text("{not json")
    code, out, err = run_main(capfdbinary, "verify", str(made["lime"]), "--manifest", str(junk))
    one_line_error(code, err, "not a JSON manifest")
    code, out, err = run_main(capfdbinary, "verify", str(made["lime"]), "--manifest", str(tmp_path / "none"))
    one_line_error(code, err, "No such file")


# -- damaged images --------------------------------------------------------------------------------------

def damaged_lime(machine, made, tmp_path, how):
    blob = made["lime"].read_bytes()
    first = machine.ram[0].size + LIME.size  # offset of the second header
    path = tmp_path / f"{how}.lime"
    if how == "truncated-header":
        blob = blob[:first + 10]
    elif how == "bad-magic":
        blob = blob[:first] + b"XXXX" + blob[first + 4:]
    elif how == "bad-version":
        blob = blob[:first + 4] + struct.pack("<I", 2) + blob[first + 8:]
    elif how == "past-eof":
        blob = blob[:first + LIME.size + 100]
    elif how == "overlap":
        r0 = machine.ram[0]
        blob = blob[:first] + lime_header(r0.end - 4096, r0.end - 4096 + machine.ram[1].size - 1) \
            + blob[first + LIME.size:]
    elif how == "backwards":
        blob = blob[:first] + lime_header(0x5000, 0x4000) + blob[first + LIME.size:]
    elif how == "trailing-garbage":
        blob = blob + b"\0" * 7
    path.write_bytes(blob)
    return path, first


@pytest.mark.parametrize("how, message, at", [
    ("truncated-header", "truncated LiME header", "second"),
    ("bad-magic", "bad LiME magic", "second"),
    ("bad-version", "unsupported LiME version 2", "second"),
    ("past-eof", "runs past the end of the file", "second"),
    ("overlap", "overlaps or precedes", "second"),
    ("backwards", "ends (0x4000) before it starts", "second"),
    ("trailing-garbage", "truncated LiME header", "end"),
])
def test_damaged_lime_is_reported_with_its_offset(dumps, capfdbinary, tmp_path, how, message, at):
    machine, made = dumps
    path, first = damaged_lime(machine, made, tmp_path, how)
    offset = first if at == "second" else made["lime"].stat().st_size
    code, out, err = run_main(capfdbinary, "info", str(path))
    one_line_error(code, err, message, f"at offset {offset:#x}", str(path))
    with pytest.raises(ImageError) as caught:
        open_image(str(path))
    assert caught.value.offset == offset


def test_damaged_elf_is_reported_with_its_offset(dumps, capfdbinary, tmp_path):
    machine, made = dumps
    blob = made["elf"].read_bytes()
    cases = {
        "short": (blob[:40], "too short", 0),
        "phdrs-cut": (blob[:64 + 56 + 10], "program header table", 64),
        "data-cut": (blob[:-1], "runs past the end of the file", 64 + 56 * len(machine.ram)),
        "not-core": (blob[:16] + struct.pack("<H", 2) + blob[18:], "not a core file", 0x10),
        "32-bit": (blob[:4] + b"\x01" + blob[5:], "not a little-endian ELF64", 4),
    }
    for name, (data, message, offset) in cases.items():
        path = tmp_path / f"{name}.elf"
        path.write_bytes(data)
        code, out, err = run_main(capfdbinary, "info", str(path))
        one_line_error(code, err, message, f"at offset {offset:#x}")


def test_overlapping_elf_segments_are_damage(dumps, capfdbinary, tmp_path):
    machine, made = dumps
    blob = bytearray(made["elf"].read_bytes())
    second = 64 + 2 * 56  # the second PT_LOAD's header
    struct.pack_into("<Q", blob, second + 24, machine.ram[0].start)  # p_paddr = the first's start
    path = tmp_path / "overlap.elf"
    path.write_bytes(bytes(blob))
    code, out, err = run_main(capfdbinary, "info", str(path))
    one_line_error(code, err, "overlaps", f"at offset {second:#x}")


def test_raw_with_a_wrong_map_and_bad_maps(dumps, capfdbinary, tmp_path):
    machine, made = dumps
    raw = made["raw"]
    cut = tmp_path / "cut.raw"
    cut.write_bytes(raw.read_bytes()[:-4096])
    code, out, err = run_main(capfdbinary, "info", "--map", str(raw) + ".map", str(cut))
    one_line_error(code, err, "describes")
    bad_map = tmp_path / "bad.map"
    bad_map.write_text("0x1000 0x2000\nhello\n")
    code, out, err = run_main(capfdbinary, "info", "--map", str(bad_map), str(raw))
    one_line_error(code, err, "map line 2", f"at offset {len('0x1000 0x2000') + 1:#x}")
    bad_map.write_text("0x3000 0x4000\n0x1000 0x2000\n")
    code, out, err = run_main(capfdbinary, "info", "--map", str(bad_map), str(raw))
    one_line_error(code, err, "overlaps or precedes")
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    code, out, err = run_main(capfdbinary, "info", str(empty))
    one_line_error(code, err, "empty image")
    code, out, err = run_main(capfdbinary, "info", str(tmp_path))
    one_line_error(code, err, "not a regular file")
