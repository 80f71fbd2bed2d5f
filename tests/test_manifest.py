"""The manifest and the digest sidecars: what they record, for complete and failed acquisitions."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, expected_ram_walk, run_main
from emulator.device import Faults
from emulator.machine import Machine
from emulator.rootfs import write_root
from memdump.manifest import check_hash, hash_names, spans
from memdump.walk import Hole


@pytest.fixture(scope="module")
def faulty_root(tmp_path_factory):
    machine = Machine(seed=21, ram_size=6 << 20)
    bad = frozenset({machine.ram[1].start + 2 * 4096, machine.ram[1].start + 3 * 4096,
                     machine.ram[2].start})
    root = str(tmp_path_factory.mktemp("faulty-root"))
    write_root(machine, root, faults=Faults(eio_pages=bad))
    return root, machine, bad


def parse_time(text: str) -> datetime.datetime:
    assert text.endswith("Z")
    return datetime.datetime.fromisoformat(text[:-1] + "+00:00")


def dump(capfd, root, tmp_path, fmt, *extra, name="image"):
    out = tmp_path / f"{name}.{fmt}"
    manifest = tmp_path / f"{name}.{fmt}.json"
    code, _, err = run_main(capfd, "--root", root, "--source", "emulator", "--format", fmt, "-o", str(out),
                            "--manifest", str(manifest), *extra)
    return code, err, out, manifest


@pytest.mark.parametrize("fmt", ["padded", "lime", "elf"])
def test_structured_manifest_accounts_for_every_page(faulty_root, capfdbinary, tmp_path, fmt):
    root, machine, bad = faulty_root
    code, err, out, manifest = dump(capfdbinary, root, tmp_path, fmt)
    assert code == 0, err
    record = json.loads(manifest.read_text())
    assert record["tool"] == "memdump" and record["version"]
    assert record["format"] == fmt and record["output"] == str(out)
    assert record["source"] == "emulator"
    assert record["kernel_release"] == machine.release
    assert record["machine"] == f"emulated-{machine.seed}"
    assert record["page_size"] == machine.page_size
    assert parse_time(record["started"]) <= parse_time(record["finished"])
    assert record["flags"]["--format"] == fmt and record["flags"]["-o"] == str(out)
    assert record["complete"] is True and record["error"] is None and record["stopped_at"] is None
    assert [(r["start"], r["end"]) for r in record["regions"]] == [(r.start, r.end) for r in machine.ram]
    # every unreadable page, zero-filled, with its reason; nothing skipped
    filled = [(z["start"], z["end"], z["reason"]) for z in record["zero_filled"]]
    two = machine.ram[1].start + 2 * 4096
    assert filled == [(two, two + 2 * 4096, "EIO"), (machine.ram[2].start, machine.ram[2].start + 4096, "EIO")]
    assert sum(z["pages"] for z in record["zero_filled"]) == len(bad)
    assert record["skipped"] == []
    blob = out.read_bytes()
    assert record["bytes_written"] == len(blob)
    assert record["digests"] == {"sha256": hashlib.sha256(blob).hexdigest()}
    # the regions' offsets locate the truth in the file (zeros where the pages failed)
    for region in record["regions"]:
        data = blob[region["offset"]:region["offset"] + region["size"]]
        for page in range(region["start"], region["end"], 4096):
            piece = data[page - region["start"]:page - region["start"] + 4096]
            assert piece == (bytes(len(piece)) if page in bad else machine.contents(page, page + len(piece)))


def test_raw_manifest_records_skipped_pages(faulty_root, capfdbinary, tmp_path):
    root, machine, bad = faulty_root
    code, err, out, manifest = dump(capfdbinary, root, tmp_path, "raw", "-m", str(tmp_path / "map"))
    assert code == 0, err
    record = json.loads(manifest.read_text())
    want_data, want_regions = expected_ram_walk(machine, bad_pages=bad)
    assert out.read_bytes() == want_data
    assert [(r["start"], r["end"]) for r in record["regions"]] == want_regions
    offsets = [r["offset"] for r in record["regions"]]
    assert offsets == [sum(e - s for s, e in want_regions[:i]) for i in range(len(want_regions))]
    assert [(s["start"], s["end"], s["reason"]) for s in record["skipped"]] == [
        (min(bad), min(bad) + 2 * 4096, "EIO"), (machine.ram[2].start, machine.ram[2].start + 4096, "EIO")]
    assert record["zero_filled"] == []
    assert record["digests"]["sha256"] == hashlib.sha256(want_data).hexdigest()
    assert record["map"] == str(tmp_path / "map")


def test_hash_options_and_sidecars(faulty_root, capfdbinary, tmp_path):
    root, machine, _ = faulty_root
    code, err, out, manifest = dump(capfdbinary, root, tmp_path, "lime", "--hash", "md5", "--hash", "SHA1",
                                    "--hash", "md5")
    assert code == 0, err
    blob = out.read_bytes()
    record = json.loads(manifest.read_text())
    assert record["digests"] == {"sha256": hashlib.sha256(blob).hexdigest(), "md5": hashlib.md5(blob).hexdigest(),
                                 "sha1": hashlib.sha1(blob).hexdigest()}
    for algorithm in ("md5", "sha1"):
        sidecar = tmp_path / f"image.lime.{algorithm}"
        assert sidecar.read_text() == f"{hashlib.new(algorithm, blob).hexdigest()}  image.lime\n"
        assert (sidecar.stat().st_mode & 0o777) == 0o600
    assert not (tmp_path / "image.lime.sha256").exists()  # sha256 was not asked for with --hash


def test_hash_alone_writes_only_the_sidecar(faulty_root, capfdbinary, tmp_path):
    root, _, _ = faulty_root
    out = tmp_path / "image.elf"
    code, _, err = run_main(capfdbinary, "--root", root, "--source", "emulator", "--format", "elf",
                            "-o", str(out), "--hash", "sha256")
    assert code == 0 and err == ""
    assert (tmp_path / "image.elf.sha256").read_text() == f"{hashlib.sha256(out.read_bytes()).hexdigest()}  image.elf\n"
    assert sorted(os.listdir(tmp_path)) == ["image.elf", "image.elf.sha256"]
    # to stdout there is no file to sit beside: the digest goes to stderr
    code, data, err = run_main(capfdbinary, "--root", root, "--source", "emulator", "-s", "64k", "--hash", "sha1")
    assert code == 0 and err == f"memdump: sha1 {hashlib.sha1(data).hexdigest()} (stdout)\n"


def test_bad_hash_and_existing_files_are_refused_before_any_output(faulty_root, capfdbinary, tmp_path):
    root, _, _ = faulty_root
    out = tmp_path / "image.lime"
    code, data, err = run_main(capfdbinary, "--root", root, "--source", "emulator", "--format", "lime",
                               "-o", str(out), "--manifest", str(tmp_path / "m.json"), "--hash", "crc99")
    assert code == 2 and err.count("\n") == 1 and "--hash crc99" in err and "sha256" in err
    assert os.listdir(tmp_path) == []
    (tmp_path / "m.json").write_text("keep me")
    code, data, err = run_main(capfdbinary, "--root", root, "--source", "emulator", "--format", "lime",
                               "-o", str(out), "--manifest", str(tmp_path / "m.json"), "--hash", "md5")
    assert code == 2 and "file exists" in err and err.count("\n") == 1
    assert sorted(os.listdir(tmp_path)) == ["m.json"] and (tmp_path / "m.json").read_text() == "keep me"
    # a failure after the records are created (the source) leaves none of them behind
    code, data, err = run_main(capfdbinary, "--root", root, "--source", "kmem", "--format", "raw",
                               "-o", str(out), "--manifest", str(tmp_path / "m2.json"), "--hash", "md5")
    assert code != 0 and err.count("\n") == 1
    assert not (tmp_path / "m2.json").exists() and not (tmp_path / "image.lime.md5").exists()


@pytest.mark.parametrize("fmt", ["raw", "lime"])
def test_broken_pipe_leaves_a_manifest_that_says_where_it_stops(faulty_root, tmp_path, fmt):
    root, machine, _ = faulty_root
    manifest = tmp_path / "m.json"
    env = dict(os.environ, PYTHONPATH=REPO)
    reader = subprocess.Popen([sys.executable, "-m", "memdump", "--root", root, "--source", "emulator",
                               "--format", fmt, "--manifest", str(manifest), "--hash", "md5"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    reader.stdout.read(4096)
    reader.stdout.close()
    err = reader.stderr.read().decode()
    assert reader.wait(timeout=60) == 1
    assert err.count("\n") == 1 and "Broken pipe" in err and "Traceback" not in err
    record = json.loads(manifest.read_text())
    assert record["complete"] is False and "Broken pipe" in record["error"]
    assert record["stopped"] == "output failed" and record["finished"]
    assert record["stopped_at"]["output_offset"] == record["bytes_written"] < machine.ram_bytes
    address = record["stopped_at"]["address"]
    assert address is not None and any(r.start <= address <= r.end for r in machine.ram)
    assert record["digests"] == {}


def test_full_disk_leaves_an_incomplete_manifest(faulty_root, tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    root, _, _ = faulty_root
    manifest = tmp_path / "m.json"
    env = dict(os.environ, PYTHONPATH=REPO)
    with open("/dev/full", "wb") as full:
        done = subprocess.run([sys.executable, "-m", "memdump", "--root", root, "--source", "emulator",
                               "--format", "elf", "--manifest", str(manifest)],
                              stdout=full, stderr=subprocess.PIPE, env=env, timeout=60)
    err = done.stderr.decode()
    assert done.returncode == 1 and err.count("\n") == 1 and "No space left on device" in err
    record = json.loads(manifest.read_text())
    assert record["complete"] is False and record["stopped_at"]["output_offset"] == 0
    assert record["stopped_at"]["address"] is None  # it failed on the ELF headers, before any region


def test_size_limit_is_recorded(faulty_root, capfdbinary, tmp_path):
    root, machine, _ = faulty_root
    code, err, out, manifest = dump(capfdbinary, root, tmp_path, "padded", "-s", "1m")
    assert code == 0, err
    record = json.loads(manifest.read_text())
    assert sum(r["size"] for r in record["regions"]) == 1 << 20
    assert record["stopped"] == "size limit (-s)" and record["flags"]["-s"] == 1 << 20


def test_hash_name_rules():
    assert check_hash("SHA256") == "sha256"
    assert hash_names(["md5", "sha256", "MD5"], manifest=True) == ("sha256", "md5")
    assert hash_names([], manifest=False) == ()
    for bad in ("shake_128", "nope", ""):
        with pytest.raises(Exception) as caught:
            check_hash(bad)
        assert "--hash" in str(caught.value)


def test_spans_merge_and_count_pages():
    holes = [Hole(0x1000, 0x2000, "EIO"), Hole(0x2000, 0x3000, "EIO"), Hole(0x3000, 0x3800, "EFAULT"),
             Hole(0x9000, 0xA000, "EIO")]
    assert spans(holes, 4096) == [
        {"start": 0x1000, "end": 0x3000, "size": 0x2000, "pages": 2, "reason": "EIO"},
        {"start": 0x3000, "end": 0x3800, "size": 0x800, "pages": 1, "reason": "EFAULT"},
        {"start": 0x9000, "end": 0xA000, "size": 0x1000, "pages": 1, "reason": "EIO"}]


def test_kcore_partial_pages_are_accounted_as_unserved(root_factory, tmp_path, capfdbinary):
    """kcore publishes whole pages only: the RAM bytes of partial last pages are listed, not lost."""
    import json

    from conftest import run_main

    root, machine = root_factory("plain", kmod=True)
    manifest = tmp_path / "kcore.json"
    code, out, err = run_main(capfdbinary, "--source", "kcore", "--root", root, "--format", "lime",
                              "-o", str(tmp_path / "kcore.lime"), "--manifest", str(manifest))
    assert code == 0, err
    unserved = [(s["start"], s["end"]) for s in json.loads(manifest.read_text())["unserved"]]
    partial = [(r.end - r.end % 4096, r.end) for r in machine.ram if r.end % 4096]
    partial += [(r.start, -(-r.start // 4096) * 4096) for r in machine.ram if r.start % 4096]
    assert sorted(unserved) == sorted(partial) and partial
