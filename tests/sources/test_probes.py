"""Probes on fake filesystems (pyfakefs): each source says whether it can run and why not."""

from __future__ import annotations

import gzip

import pytest

from memdump.host import Host
from memdump.sources import probe_all
from memdump.sources.base import LIMITED, UNUSABLE, USABLE
from memdump.sources.devmem import DevMem
from memdump.sources.kmem import KMem

IOMEM = "00001000-0009fbff : System RAM\n00100000-1ffd9fff : System RAM\n  01000000-01ffffff : Kernel code\n"


@pytest.fixture
def machine(fs):
    fs.create_file("/proc/iomem", contents=IOMEM)
    fs.create_file("/proc/sys/kernel/osrelease", contents="6.1.0-56-amd64\n")
    fs.create_file("/dev/mem", contents=b"\0" * 4096)
    fs.create_file("/boot/config-6.1.0-56-amd64", contents="# CONFIG_STRICT_DEVMEM is not set\n")
    return fs


def test_devmem_usable(machine):
    probe = DevMem.probe(Host())
    assert probe.status == USABLE and "2 System RAM ranges" in probe.reason


def test_strict_devmem_from_boot_config(machine):
    machine.remove_object("/boot/config-6.1.0-56-amd64")
    machine.create_file("/boot/config-6.1.0-56-amd64", contents="CONFIG_STRICT_DEVMEM=y\n")
    probe = DevMem.probe(Host())
    assert probe.status == LIMITED and "CONFIG_STRICT_DEVMEM=y" in probe.reason


def test_strict_devmem_from_proc_config_gz_wins(machine):
    machine.create_file("/proc/config.gz", contents=gzip.compress(b"CONFIG_STRICT_DEVMEM=y\n"))
    assert Host().kernel_config("STRICT_DEVMEM") == "y"
    assert DevMem.probe(Host()).status == LIMITED


@pytest.mark.parametrize("mode", ["integrity", "confidentiality"])
def test_lockdown_blocks_devmem(machine, mode):
    machine.create_file("/sys/kernel/security/lockdown", contents=f"none {'[' + mode + ']'} other\n")
    assert Host().lockdown() == mode
    probe = DevMem.probe(Host())
    assert probe.status == UNUSABLE and f"lockdown ({mode})" in probe.reason


def test_no_lockdown(machine):
    machine.create_file("/sys/kernel/security/lockdown", contents="[none] integrity confidentiality\n")
    assert Host().lockdown() is None


def test_non_root_iomem(machine):
    machine.remove_object("/proc/iomem")
    machine.create_file("/proc/iomem", contents="00000000-00000000 : System RAM\n00000000-00000000 : Reserved\n")
    probe = DevMem.probe(Host())
    assert probe.status == UNUSABLE and "CAP_SYS_ADMIN" in probe.reason


def test_kmem_removed_and_present(machine):
    assert "removed in Linux 5.13" in KMem.probe(Host(), kernel=True).reason
    machine.create_file("/dev/kmem", contents=b"")
    probe = KMem.probe(Host(), kernel=True)
    assert probe.status == LIMITED and "only --scan" in probe.reason  # no /proc/kcore for a map
    assert KMem.probe(Host(), kernel=False).status == UNUSABLE


def test_probe_all_never_raises_and_names_every_source(fs):
    names = [p.source for p in probe_all(Host())]
    assert {"devmem", "kmem", "kcore", "emulator"} <= set(names)
    assert all(p.status in (USABLE, LIMITED, UNUSABLE) and p.reason for p in probe_all(Host()))


def test_root_directory_redirects_every_path(fs):
    fs.create_file("/fake/proc/sys/kernel/osrelease", contents="5.4.0-test\n")
    assert Host("/fake").kernel_release() == "5.4.0-test"
    assert Host("/fake").path("/dev/mem") == "/fake/dev/mem"
