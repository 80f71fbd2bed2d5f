"""The bundle a dump saves beside its image: the kernel's files, copied as they are, the ISF
built from them, and the kernel facts the manifest records."""

from __future__ import annotations

import json
import lzma
import os

import pytest

from memdump import elf64
from memdump.bundle import build_id, capture, kernel_facts, prepare
from memdump.errors import UsageError
from memdump.facts import MachineFacts
from memdump.host import Host
from test_symbols_kallsyms import BANNER, machine

BUILD_ID = bytes(range(20))
VMCOREINFO = b"OSRELEASE=6.1.0-57-amd64\nPAGESIZE=4096\nKERNELOFFSET=1c000000\nNUMBER(pgtable_l5_enabled)=0\n"


def full_machine(tmp_path):
    root = machine(tmp_path / "root")
    extra = {"/sys/kernel/notes": elf64.pack_note(elf64.Note(b"Xen", 1, b"\0" * 8))
             + elf64.pack_note(elf64.Note(b"GNU", 3, BUILD_ID)),
             "/proc/modules": b"memdump 16384 0 - Live 0x0000000000000000 (OE)\n",
             "/proc/cmdline": b"console=ttyS0 no5lvl\n",
             "/etc/os-release": b'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n',
             "/proc/sys/kernel/osrelease": b"6.1.0-57-amd64\n"}
    for path, data in extra.items():
        full = os.path.join(root, path.lstrip("/"))
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(data)
    return root, extra


def test_capture_copies_the_kernel_files_and_builds_the_isf(tmp_path):
    root, extra = full_machine(tmp_path)
    target = str(tmp_path / "case" / "kernel")
    prepare(target)
    bundle = capture(target, Host(root), MachineFacts(vmcoreinfo=VMCOREINFO))
    for name, source in {"modules": "/proc/modules", "cmdline": "/proc/cmdline",
                         "os-release": "/etc/os-release", "notes": "/sys/kernel/notes",
                         "version": "/proc/version", "btf": "/sys/kernel/btf/vmlinux",
                         "kallsyms": "/proc/kallsyms"}.items():
        with open(os.path.join(root, source.lstrip("/")), "rb") as f:
            assert open(os.path.join(target, name), "rb").read() == f.read(), name
    assert open(os.path.join(target, "vmcoreinfo"), "rb").read() == VMCOREINFO
    assert bundle.missing == {} and bundle.isf == os.path.join(target, "linux", "6.1.0-57-amd64.json.xz")
    isf = json.loads(lzma.decompress(open(bundle.isf, "rb").read()))
    assert isf["symbols"]["init_task"]["type"]["name"] == "task_struct"
    assert BANNER.rstrip(b"\n").decode() in json.dumps(isf) or isf["symbols"]["linux_banner"]


def test_a_kernel_without_btf_is_captured_without_an_isf(tmp_path):
    root = machine(tmp_path / "root", btf=False)
    target = str(tmp_path / "b")
    prepare(target)
    bundle = capture(target, Host(root), MachineFacts())
    assert bundle.isf is None and "CONFIG_DEBUG_INFO_BTF" in bundle.missing["isf"]
    assert "btf" in bundle.missing and "vmcoreinfo" in bundle.missing
    assert open(os.path.join(target, "version"), "rb").read() == BANNER


def test_prepare_refuses_a_directory_in_use(tmp_path):
    used = tmp_path / "used"
    used.mkdir()
    (used / "version").write_text("an earlier capture")
    with pytest.raises(UsageError, match="not an empty directory"):
        prepare(str(used))
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError):
        prepare(str(tmp_path / "file"))
    prepare(str(tmp_path / "empty"))
    prepare(str(tmp_path / "empty"))  # an empty directory is fine


def test_kernel_facts(tmp_path):
    root, _ = full_machine(tmp_path)
    facts = kernel_facts(Host(root), MachineFacts(vmcoreinfo=VMCOREINFO))
    assert facts == {"release": "6.1.0-57-amd64", "build_id": BUILD_ID.hex(),
                     "kaslr_offset": "0x1c000000", "paging_levels": 4}
    five = kernel_facts(Host(root), MachineFacts(vmcoreinfo=VMCOREINFO.replace(b"enabled)=0", b"enabled)=1")))
    assert five["paging_levels"] == 5
    assert kernel_facts(Host(str(tmp_path / "nothing")), MachineFacts())["build_id"] is None
    assert build_id(b"garbage") is None
