"""--scan: the original program's blind walk, address for address.

The oracle is a plain transcription of the original C loop (read -b bytes; on error close the
region and step -p; stop at EOF or after -s bytes) run against the emulator, without any of
memdump's large-read optimisation. The root-only test compares with the original binary itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from emulator.device import EmulatedMemory, Faults
from emulator.machine import Machine
from memdump.errors import HoleError
from memdump.sink import Sink
from memdump.walk import ScanWalk

from conftest import REPO


def original_loop(source, buffer_size, page_size, dump_size, end):
    where = count = 0
    start = None
    out, regions = bytearray(), []
    buf = memoryview(bytearray(buffer_size))
    while dump_size == 0 or count < dump_size:
        if where >= end:
            break
        todo = min(buffer_size, end - where)
        if dump_size and dump_size - count < todo:
            todo = dump_size - count
        while True:
            try:
                n = source.readinto(where, buf[:todo])
                break
            except InterruptedError:
                continue
            except HoleError:
                n = -1
                break
        if n == 0:
            break
        if n > 0:
            if start is None:
                start = where
            out += buf[:n]
            count += n
            where += n
        else:
            if start is not None:
                regions.append((start, where))
                start = None
            where += page_size
    if start is not None:
        regions.append((start, where))
    return bytes(out), regions


def scan(source, tmp_path, **options):
    path = tmp_path / "scan"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    regions = []
    try:
        ScanWalk(source, Sink(fd), on_region=lambda s, e: regions.append((s, e)), **options).run()
    finally:
        os.close(fd)
    return path.read_bytes(), regions


CASES = [  # (buffer size, page size, explicit -b, dump size)
    (4096, 4096, False, 0), (4096, 4096, True, 0), (1 << 20, 4096, True, 0), (3000, 4096, True, 0),
    (4096, 8192, False, 0), (4096, 4096, False, 1 << 20), (8192, 4096, True, 777777),
    (4096, 4096, False, 3 << 20),
]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("buffer_size, page_size, explicit, dump_size", CASES)
@pytest.mark.parametrize("behaviour", ["module", "strict-devmem"])
def test_scan_equals_the_original_loop(seed, buffer_size, page_size, explicit, dump_size, behaviour, tmp_path):
    machine = Machine(seed=seed, ram_size=4 << 20)
    faults = Faults(eio_pages=frozenset({machine.ram[1].start + 8 * 4096}))
    ours = EmulatedMemory(machine=machine, behaviour=behaviour, faults=faults)
    theirs = EmulatedMemory(machine=machine, behaviour=behaviour, faults=faults)
    got = scan(ours, tmp_path, page_size=page_size, read_size=buffer_size, exact_reads=explicit,
               limit=dump_size)
    want = original_loop(theirs, buffer_size, page_size, dump_size, theirs.scan_end())
    assert got[1] == want[1]
    assert got[0] == want[0]


def have_original_and_namespaces():
    if os.geteuid() != 0 or not shutil.which("unshare") or not os.path.exists("/usr/sbin/memdump"):
        return False
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.root
@pytest.mark.skipif(not have_original_and_namespaces(),
                    reason="needs root, unshare and the original memdump (Debian package memdump)")
@pytest.mark.parametrize("flags", [["-s", "1m"], ["-s", "3m", "-b", "1m"], ["-b", "3000", "-s", "2m"], []])
def test_scan_equals_the_original_binary(flags, root_factory, tmp_path):
    """The real TCT memdump reads the emulator's image as /dev/mem in a private mount namespace."""
    root, _machine = root_factory("original", ram=8 << 20)
    image = os.path.join(root, "dev", "mem")
    script = (f"mount -t tmpfs none /dev && touch /dev/mem && mount --bind {image} /dev/mem && "
              f"exec /usr/sbin/memdump -m {tmp_path}/orig.map {' '.join(flags)} > {tmp_path}/orig.img")
    subprocess.run(["unshare", "-m", "sh", "-c", script], check=True)
    env = dict(os.environ, PYTHONPATH=REPO)
    with open(tmp_path / "ours.img", "wb") as out:
        subprocess.run(["python3", "-m", "memdump", "--source", "devmem", "--scan", "--root", root,
                        "-m", str(tmp_path / "ours.map"), *flags], stdout=out, check=True, env=env)
    assert (tmp_path / "ours.map").read_text() == (tmp_path / "orig.map").read_text()
    assert (tmp_path / "ours.img").read_bytes() == (tmp_path / "orig.img").read_bytes()
