"""The kmod source's probe and reads on fake roots (no module, no root needed)."""

from __future__ import annotations

import errno
import os

import pytest

from memdump.errors import HoleError
from memdump.host import Host
from memdump.sources.base import UNUSABLE, USABLE
from memdump.module.names import installed_module
from memdump.sources.kmod import KmodMemory

IOMEM = "00001000-0009fbff : System RAM\n00100000-001fffff : System RAM\n"
RELEASE = "6.1.0-56-amd64"


def make_root(tmp_path, *, device=True, loaded=True, installed=False, lockdown="none"):
    def write(path, data):
        full = tmp_path / path.lstrip("/")
        full.parent.mkdir(parents=True, exist_ok=True)
        (full.write_bytes if isinstance(data, bytes) else full.write_text)(data)

    write("/proc/iomem", IOMEM)
    write("/proc/sys/kernel/osrelease", RELEASE + "\n")
    write("/sys/kernel/security/lockdown",
          " ".join(f"[{m}]" if m == lockdown else m for m in ("none", "integrity", "confidentiality")))
    if device:
        write("/dev/memdump", bytes(range(256)) * (0x200000 // 256))
    if loaded:
        write("/sys/module/memdump/version", "0.1.0\n")
    if installed:
        write(f"/lib/modules/{RELEASE}/modules.dep", "updates/dkms/memdump.ko:\nkernel/fs/9p/9p.ko:\n")
    return Host(str(tmp_path))


def test_usable_names_module_version_and_ram(tmp_path):
    probe = KmodMemory.probe(make_root(tmp_path))
    assert probe.status == USABLE
    assert "memdump.ko 0.1.0" in probe.reason and "2 System RAM ranges" in probe.reason


@pytest.mark.parametrize("kw, words", [
    (dict(device=False, loaded=False), ["not loaded", "none is installed", RELEASE, "memdump module build"]),
    (dict(device=False, loaded=False, installed=True), ["not loaded", "memdump module load"]),
    (dict(device=False, loaded=True), ["loaded", "/dev/memdump is missing"]),
    (dict(lockdown="confidentiality"), ["lockdown (confidentiality)"]),
])
def test_unusable_says_why(tmp_path, kw, words):
    probe = KmodMemory.probe(make_root(tmp_path, **kw))
    assert probe.status == UNUSABLE
    for word in words:
        assert word in probe.reason


def test_kernel_memory_is_not_served(tmp_path):
    assert KmodMemory.probe(make_root(tmp_path), kernel=True).status == UNUSABLE


def test_module_file_from_modules_dep(tmp_path):
    host = make_root(tmp_path, installed=True)
    assert installed_module(host) == f"/lib/modules/{RELEASE}/updates/dkms/memdump.ko"


def test_reads_and_hole_errors(tmp_path):
    host = make_root(tmp_path)
    with KmodMemory(host) as source:
        assert [tuple(r) for r in source.ranges()] == [(0x1000, 0x9FC00), (0x100000, 0x200000)]
        assert source.read(0x1001, 3) == bytes([1, 2, 3])
        assert source.zero_copy(0x1000) is None  # the driver cannot splice
        os.close(source.fd)
        source.fd = os.open(os.devnull, os.O_WRONLY)  # any read now fails: EBADF
        with pytest.raises(HoleError) as caught:
            source.read(0x2000, 16)
        assert caught.value.address == 0x2000 and caught.value.errno == errno.EBADF
