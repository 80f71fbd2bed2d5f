"""kallsyms parsing, the refusals a responder can meet (kptr_restrict, no KALLSYMS_ALL, no BTF),
and the two ways in: the running kernel under a root directory, and a bundle directory."""

from __future__ import annotations

import os

import pytest

from memdump.errors import MemdumpError
from memdump.symbols import banner_identifier, from_bundle, from_host, kallsyms
from memdump.symbols.errors import KallsymsError, KallsymsRestricted, MissingInput
from symbols_btf_writer import SIGNED, BtfWriter

BANNER = b"Linux version 6.1.0-57-amd64 (debian-kernel@lists.debian.org) (gcc-12) #1 SMP PREEMPT_DYNAMIC Debian 6.1.158-1\n"

KALLSYMS = (
    "ffffffff81000000 T _text\n"
    "ffffffff81000000 T startup_64\n"
    "ffffffff810a0000 t do_one\n"
    "ffffffff810b0000 T do_one\n"
    "ffffffff810c0000 t do_one\n"
    "ffffffff82000000 D linux_banner\n"
    "ffffffff82600000 D init_task\n"
    "ffffffff82600e40 d after_init_task\n"
    "ffffffffc0a00000 t nf_hook\t[nf_tables]\n"
    "ffffffffc0a01000 T nf_register\t[nf_tables]\n"
)


def test_parse_addresses_and_letters():
    table = kallsyms.parse(KALLSYMS)
    assert table.address("_text") == 0xFFFFFFFF81000000
    assert table["init_task"] == kallsyms.Kallsym("init_task", 0xFFFFFFFF82600000, "D")
    assert "nf_hook" not in table and "nf_register" not in table  # modules' symbols
    assert len(table) == 6


def test_repeated_names_keep_the_global_one():
    table = kallsyms.parse(KALLSYMS)
    assert table["do_one"] == kallsyms.Kallsym("do_one", 0xFFFFFFFF810B0000, "T")
    assert table.duplicates == 2


def test_repeated_locals_keep_the_first():
    table = kallsyms.parse("ffffffff81000010 t helper\nffffffff81000020 t helper\n")
    assert table.address("helper") == 0xFFFFFFFF81000010


def test_gap_to_the_next_symbol():
    table = kallsyms.parse(KALLSYMS)
    assert table.gap_after("init_task") == 0xE40
    assert table.gap_after("_text") == 0xA0000  # startup_64 shares its address
    assert table.gap_after("after_init_task") == 0  # the last one


def test_zero_addresses_mean_kptr_restrict():
    hidden = "".join("0000000000000000 " + line.split(" ", 1)[1] for line in KALLSYMS.splitlines(True))
    with pytest.raises(KallsymsRestricted) as caught:
        kallsyms.parse(hidden)
    message = str(caught.value)
    assert "kptr_restrict" in message and "root" in message and "sysctl kernel.kptr_restrict=1" in message
    assert "\n" not in message
    assert isinstance(caught.value, MemdumpError)


def test_empty_and_malformed():
    with pytest.raises(KallsymsError, match="empty"):
        kallsyms.parse("\n")
    with pytest.raises(KallsymsError, match="line 2"):
        kallsyms.parse("ffffffff81000000 T _text\nnot a kallsyms line at all\n")
    with pytest.raises(KallsymsError, match="bad address"):
        kallsyms.parse("zzzz T _text\n")


def test_missing_required():
    table = kallsyms.parse("ffffffff81000000 T _text\nffffffff82600000 D init_task\n")
    assert kallsyms.missing(table) == ["linux_banner"]


# -- from_host and from_bundle ---------------------------------------------------------------------


def small_btf() -> bytes:
    w = BtfWriter()
    i = w.int_("int", 4, SIGNED)
    w.int_("char", 1)
    w.int_("long unsigned int", 8)
    lp = w.ptr(w.next_id + 1)
    lh = w.struct("list_head", 16, [("next", lp, 0, 0), ("prev", lp, 64, 0)])
    w.struct("task_struct", 32, [("pid", i, 0, 0), ("tasks", lh, 64, 0)])
    return w.blob()


def machine(root, btf=True, kallsyms_text=KALLSYMS, version=BANNER):
    if btf:
        os.makedirs(root / "sys/kernel/btf")
        (root / "sys/kernel/btf/vmlinux").write_bytes(small_btf())
    os.makedirs(root / "proc")
    (root / "proc/kallsyms").write_text(kallsyms_text)
    (root / "proc/version").write_bytes(version)
    return str(root)


def test_from_host_reads_under_the_root(tmp_path):
    isf = from_host(machine(tmp_path))
    assert banner_identifier(isf) == BANNER + b"\0"
    assert isf["symbols"]["init_task"] == {"address": 0xFFFFFFFF82600000, "type": {"kind": "struct", "name": "task_struct"}}
    assert isf["user_types"]["task_struct"]["fields"]["tasks"]["offset"] == 8
    assert isf["metadata"]["linux"]["types"][0]["name"] == "btf-6.1.0-57-amd64"


def test_from_host_without_btf(tmp_path):
    with pytest.raises(MissingInput, match="CONFIG_DEBUG_INFO_BTF"):
        from_host(machine(tmp_path, btf=False))


def test_from_host_with_hidden_addresses(tmp_path):
    hidden = "".join("0000000000000000 " + line.split(" ", 1)[1] for line in KALLSYMS.splitlines(True))
    with pytest.raises(KallsymsRestricted, match="kptr_restrict"):
        from_host(machine(tmp_path, kallsyms_text=hidden))


def test_from_host_without_kallsyms_all(tmp_path):
    text_only = "ffffffff81000000 T _text\nffffffff810b0000 T do_one\n"
    with pytest.raises(KallsymsError, match="CONFIG_KALLSYMS_ALL") as caught:
        from_host(machine(tmp_path, kallsyms_text=text_only))
    assert "linux_banner" in str(caught.value) and "init_task" in str(caught.value)


def bundle(directory, vmcoreinfo=None):
    os.makedirs(directory)
    (directory / "btf").write_bytes(small_btf())
    (directory / "kallsyms").write_text(KALLSYMS)
    (directory / "version").write_bytes(BANNER)
    if vmcoreinfo is not None:
        (directory / "vmcoreinfo").write_text(vmcoreinfo)
    return str(directory)


def test_from_bundle(tmp_path):
    isf = from_bundle(bundle(tmp_path / "b"))
    assert banner_identifier(isf) == BANNER + b"\0"
    assert isf["symbols"]["linux_banner"]["address"] == 0xFFFFFFFF82000000


def test_from_bundle_with_vmcoreinfo(tmp_path):
    info = "OSRELEASE=6.1.0-57-amd64+\nPAGESIZE=4096\nSYMBOL(swapper_pg_dir)=ffffffff8260a000\nSYMBOL(init_task)=ffffffff99999999\nKERNELOFFSET=0\n"
    isf = from_bundle(bundle(tmp_path / "b", info))
    assert isf["symbols"]["swapper_pg_dir"] == {"address": 0xFFFFFFFF8260A000}
    # kallsyms wins over VMCOREINFO for a symbol both list
    assert isf["symbols"]["init_task"]["address"] == 0xFFFFFFFF82600000
    assert isf["metadata"]["linux"]["types"][0]["name"] == "btf-6.1.0-57-amd64+"


@pytest.mark.parametrize("name, words", [("btf", "/sys/kernel/btf/vmlinux"), ("kallsyms", "/proc/kallsyms"), ("version", "/proc/version")])
def test_from_bundle_names_the_missing_file(tmp_path, name, words):
    directory = bundle(tmp_path / "b")
    os.unlink(os.path.join(directory, name))
    with pytest.raises(MissingInput) as caught:
        from_bundle(directory)
    message = str(caught.value)
    assert message.startswith(os.path.join(directory, name) + ":") and words in message


def test_from_bundle_not_a_directory(tmp_path):
    with pytest.raises(MissingInput, match="no such bundle directory"):
        from_bundle(str(tmp_path / "absent"))


# -- KASLR: the ISF holds addresses as linked, Volatility adds the shift it finds ----------------

MOVED = 0x1D000000  # a KASLR offset: a multiple of 2 MiB


def moved_kallsyms(offset=MOVED, text=0xFFFFFFFF81000000):
    lines = [
        f"{text + offset:016x} T _text",
        f"{0xFFFFFFFF82000000 + offset:016x} D linux_banner",
        f"{0xFFFFFFFF82600000 + offset:016x} D init_task",
        "000000000001a000 D runqueues",  # a per-CPU offset: KASLR does not move it
    ]
    return "\n".join(lines) + "\n"


def test_kaslr_offset_is_taken_off_kernel_image_addresses():
    from memdump.symbols import build_isf

    isf = build_isf(small_btf(), moved_kallsyms(), BANNER)
    symbols = isf["symbols"]
    assert symbols["_text"]["address"] == 0xFFFFFFFF81000000
    assert symbols["init_task"]["address"] == 0xFFFFFFFF82600000
    assert symbols["linux_banner"]["address"] == 0xFFFFFFFF82000000
    assert symbols["runqueues"]["address"] == 0x1A000


def test_vmcoreinfo_kerneloffset_wins_over_the_derived_one():
    from memdump.symbols import build_isf

    # _text says 0x1d000000, VMCOREINFO says 0x1c000000 (a kernel linked 16 MiB higher)
    info = "OSRELEASE=6.1.0\nKERNELOFFSET=1c000000\nSYMBOL(swapper_pg_dir)=ffffffff9f60a000\n"
    isf = build_isf(small_btf(), moved_kallsyms(), BANNER, vmcoreinfo=info)
    assert isf["symbols"]["_text"]["address"] == 0xFFFFFFFF82000000
    assert isf["symbols"]["swapper_pg_dir"]["address"] == 0xFFFFFFFF9F60A000 - 0x1C000000
    explicit = build_isf(small_btf(), moved_kallsyms(), BANNER, vmcoreinfo=info, kaslr_offset=MOVED)
    assert explicit["symbols"]["_text"]["address"] == 0xFFFFFFFF81000000


def test_unexplainable_text_address_is_refused():
    from memdump.symbols import build_isf
    from memdump.symbols.errors import SymbolsError

    with pytest.raises(SymbolsError, match="KERNELOFFSET") as caught:
        build_isf(small_btf(), moved_kallsyms(offset=0x1234000), BANNER)
    assert "\n" not in str(caught.value)
