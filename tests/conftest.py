"""Shared fixtures: emulated machines (the truth) and fake roots written from them."""

from __future__ import annotations

import os
import struct
import subprocess
import sys

import pytest

from emulator.machine import Machine
from emulator.rootfs import write_root
from memdump.cli import main
from memdump.formats.raw import RawWriter
from memdump.walk import DEFAULT_READ_SIZE, RegionWalk

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "tests", "fixtures")


@pytest.fixture(scope="session")
def root_factory(tmp_path_factory):
    """``make(name, seed=..., ram=..., **write_root options) -> (root path, Machine)``, cached."""
    made: dict = {}

    def make(name: str, seed: int = 7, ram: int = 16 << 20, **options):
        key = (name, seed, ram, tuple(sorted(options.items())))
        if key not in made:
            machine = Machine(seed=seed, ram_size=ram)
            path = str(tmp_path_factory.mktemp(name))
            write_root(machine, path, **options)
            made[key] = (path, machine)
        return made[key]

    return make


@pytest.fixture(scope="session")
def plain_root(root_factory):
    return root_factory("plain", kmod=True)


def expected_ram_walk(machine: Machine, bad_pages=frozenset(), limit: int = 0):
    """What a RAM walk must produce, from the truth alone: every RAM byte except bad pages, in
    address order, regions = maximal contiguous runs, capped at ``limit`` bytes."""
    spans = []
    page = machine.page_size
    for r in machine.ram:
        address = r.start
        while address < r.end:
            step_end = min(address - address % page + page, r.end)
            if address - address % page not in bad_pages:
                if spans and spans[-1][1] == address:
                    spans[-1][1] = step_end
                else:
                    spans.append([address, step_end])
            address = step_end
    if limit:
        capped, left = [], limit
        for start, end in spans:
            if left <= 0:
                break
            take = min(end - start, left)
            capped.append([start, start + take])
            left -= take
        spans = capped
    data = b"".join(machine.contents(s, e) for s, e in spans)
    return data, [(s, e) for s, e in spans]


def map_lines(regions) -> str:
    return "".join(f"0x{s:x} 0x{e:x}\n" for s, e in regions)


def run_main(capfd, *args):
    """Run the CLI in-process as the console script does; returns (exit code, stdout bytes, stderr)."""
    with pytest.raises(SystemExit) as stop:
        main(list(args))
    out, err = capfd.readouterr()
    return stop.value.code, out, err.decode() if isinstance(err, bytes) else err


def run_subprocess(*args, **kwargs):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "memdump", *args], capture_output=True, env=env, **kwargs)


def raw_walk(source, sink, *, page_size=4096, read_size=DEFAULT_READ_SIZE, limit=0,
             on_region=lambda start, end: None):
    """The default dump's walk, as ``acquire`` builds it for --format raw: every range the
    source serves, into the raw writer, ``limit`` capping the bytes written (-s)."""
    writer = RawWriter(sink, source.ranges(), on_region=on_region)
    return RegionWalk(source, writer, page_size=page_size, read_size=read_size, budget=limit).run()


# -- the kernel module without a kernel ------------------------------------------------------


def fake_ko(path, vermagic="6.1.0-emulated SMP preempt mod_unload modversions ", version="0.1.0"):
    """A minimal ELF64 relocatable with a .modinfo section, as kbuild leaves in a module."""
    modinfo = f"version={version}\0license=GPL\0name=memdump\0vermagic={vermagic}\0".encode()
    names = b"\0.modinfo\0.shstrtab\0"
    shoff = 64 + len(modinfo) + len(names)
    shoff += -shoff % 8

    def section(name, kind, offset, size):
        return struct.pack("<IIQQQQIIQQ", name, kind, 0, 0, offset, size, 0, 0, 1, 0)

    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    header = struct.pack("<16sHHIQQQIHHHHHH", ident, 1, 62, 1, 0, 0, shoff, 0, 64, 0, 0, 64, 3, 2)
    body = header + modinfo + names
    body += bytes(shoff - len(body))
    body += bytes(64) + section(1, 1, 64, len(modinfo)) + section(10, 3, 64 + len(modinfo), len(names))
    path.write_bytes(body)
    return str(path)


@pytest.fixture
def fake_make(tmp_path, monkeypatch):
    """``make`` on PATH that records its arguments and leaves a memdump.ko built for $FAKE_KVER."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    template = tmp_path / "template.ko"
    fake_ko(template, vermagic="6.1.0-56-amd64 SMP preempt mod_unload ")
    (bin_dir / "make").write_text(
        "#!/bin/sh\n"
        f"echo \"$@\" > {tmp_path}/make.args\n"
        "[ -n \"$FAKE_MAKE_FAIL\" ] && { echo 'memdump_main.c:12:1: error: unknown type name'; exit 2; }\n"
        "echo \"  CC [M]  memdump_main.o\"\n"
        f"cp {template} \"$2/memdump.ko\"\n")
    (bin_dir / "make").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    headers = tmp_path / "headers"
    headers.mkdir()
    (headers / "Makefile").write_text("")
    return tmp_path, headers
