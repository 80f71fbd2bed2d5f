"""The public API: the library page's example runs as written, and what it made is the truth."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from conftest import REPO
from emulator.machine import Machine

DOC = os.path.join(REPO, "docs", "library.rst")


def example_code() -> str:
    """The page's one python code block, dedented."""
    text = open(DOC).read()
    block = re.search(r"\.\. code-block:: python\n\n((?:   .*\n|\n)+)", text)
    assert block, "docs/library.rst has no python example"
    return "\n".join(line[3:] for line in block.group(1).splitlines()) + "\n"


def test_the_documented_example_runs_and_dumps_the_truth(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(example_code() + "\nimport json, sys\njson.dump({'page': page.hex(), "
                      "'first': [first.start, first.end]}, sys.stderr)\n")
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=REPO))
    assert done.returncode == 0, done.stderr
    machine = Machine(seed=1, ram_size=32 << 20)
    # the LiME image holds every RAM range with the truth's bytes (read here, not by memdump)
    blob = (tmp_path / "host.lime").read_bytes()
    offset, found = 0, []
    while offset < len(blob):
        magic, version, start, last = (int.from_bytes(blob[offset + a:offset + b], "little")
                                       for a, b in ((0, 4), (4, 8), (8, 16), (16, 24)))
        assert (magic, version) == (0x4C694D45, 1)
        data = blob[offset + 32:offset + 32 + last - start + 1]
        assert data == machine.contents(start, last + 1)
        found.append((start, last + 1))
        offset += 32 + last - start + 1
    assert found == [(r.start, r.end) for r in machine.ram]
    out = done.stdout.splitlines()
    assert out[0].startswith(f"kmod: {len(blob)} bytes, sha256 ")
    assert [f"{s:#x}-{e:#x}" for s, e in found] == [line.split(" at ")[0] for line in out[1:1 + len(found)]]
    assert out[-1].endswith("verified against host.json")
    manifest = json.loads((tmp_path / "host.json").read_text())
    assert manifest["complete"] and manifest["source"] == "kmod" and manifest["format"] == "lime"
    # the ELF conversion: the same bytes after its headers, in one PT_LOAD per range
    elf = (tmp_path / "host.elf").read_bytes()
    assert elf[:4] == b"\x7fELF" and elf.endswith(machine.truth_ram_image())
    tail = json.loads(done.stderr.strip().splitlines()[-1])
    first = machine.ram[0]
    assert tail["first"] == [first.start, first.end]
    assert bytes.fromhex(tail["page"]) == machine.contents(first.start, first.start + 4096)


def test_importing_memdump_loads_nothing_else():
    """The public names load on first use: a dump's start-up pays for none of them."""
    code = "import sys, memdump; print(sorted(m for m in sys.modules if m.startswith('memdump')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=REPO))
    assert done.stdout.strip() == "['memdump', 'memdump.lazy']", done.stderr


def test_a_dump_imports_neither_the_module_tools_nor_hashing(tmp_path):
    """The module's library and CLI load only for ``memdump module`` or ``--load-module`` (a dump
    through the module needs only its names, ``memdump.module.names``)."""
    from emulator.rootfs import write_root

    write_root(Machine(seed=2, ram_size=8 << 20), str(tmp_path / "root"), kmod=True)
    code = ("import sys\nfrom memdump.cli import main\ntry:\n    main(sys.argv[1:])\n"
            "except SystemExit as stop:\n    assert not stop.code, stop.code\n"
            "sys.stderr.write(' '.join(sorted(m for m in sys.modules if m.startswith("
            "('memdump.module.', 'memdump.cli.module', 'hashlib', 'memdump.conversion', 'memdump.verification', 'emulator')) "
            "and m != 'memdump.module.names')))\n")
    done = subprocess.run([sys.executable, "-c", code, "--root", str(tmp_path / "root"), "--source",
                           "kmod", "-o", str(tmp_path / "out")], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=REPO))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert os.path.getsize(tmp_path / "out") == Machine(seed=2, ram_size=8 << 20).ram_bytes


def test_public_names_stay_what_the_page_says_after_the_cli_loads():
    """Every public name keeps its documented meaning whatever was imported first: the CLI
    imports the modules behind them, and a submodule named like a public function would
    replace the function on the package once anything imported it."""
    code = ("import importlib, inspect, pkgutil, memdump\n"
            "for found in pkgutil.walk_packages(memdump.__path__, 'memdump.'):\n"
            "    if found.name != 'memdump.__main__':\n"
            "        importlib.import_module(found.name)\n"
            "for name in memdump.__all__:\n"
            "    value = getattr(memdump, name)\n"
            "    assert not inspect.ismodule(value) or name == 'errors', name\n"
            "print(memdump.acquire.__module__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=REPO))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "memdump.acquisition"
