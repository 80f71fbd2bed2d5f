"""What the machine says about itself that an ELF core records: VMCOREINFO and the direct map.

VMCOREINFO (the kernel's note that crash, drgn and Volatility use to find KASLR's offset, the
page tables and the release) comes from /proc/kcore's note, else from the physical address and
size that /sys/kernel/vmcoreinfo publishes, read through the source itself. The direct map's base
(for ``p_vaddr``) comes from /proc/kcore's segments. Nothing here is required: a fact that cannot
be found is left out, and said so in a remark.
"""

from __future__ import annotations

from typing import Callable

from memdump import elf64
from memdump.errors import MemdumpError, SourceUnavailable
from memdump.formats.base import ImageMeta
from memdump.sources.base import DevMemory

SYS_VMCOREINFO = "/sys/kernel/vmcoreinfo"
Remark = Callable[[int, str], None]


def reads_host(source: DevMemory) -> bool:
    """Whether the source's host files describe the memory it reads. The in-process emulator on
    the real root ("/") reads a made-up machine: the real /proc/kcore says nothing about it."""
    return source.name != "emulator" or source.host.root != "/"


def vmcoreinfo_from_memory(source: DevMemory, text: str) -> bytes:
    """Read the note /sys/kernel/vmcoreinfo points at ("<hex paddr> <hex size>") through the
    source and return its VMCOREINFO text."""
    fields = text.split()
    if len(fields) < 2:
        raise ValueError(f"{SYS_VMCOREINFO}: expected '<address> <size>', got {text.strip()!r}")
    address, size = int(fields[0], 16), int(fields[1], 16)
    if not 0 < size <= 1 << 20:
        raise ValueError(f"{SYS_VMCOREINFO}: implausible note size {size:#x}")
    page = 4096
    first = address - address % page
    last = -(-(address + size) // page) * page
    blob = source.read(first, last - first)[address - first:address - first + size]
    for note in elf64.parse_notes(blob):
        if note.name == b"VMCOREINFO":
            return note.desc
    raise ValueError(f"no VMCOREINFO note at {address:#x}")


def machine_meta(source: DevMemory, remark: Remark = lambda level, text: None) -> tuple[ImageMeta, dict]:
    """The ImageMeta for an ELF core of ``source``, and a record of where each fact came from."""
    from memdump.sources.kcore import KcoreLayout

    record: dict = {"vmcoreinfo": None, "direct_map_base": None}
    layout = getattr(source, "layout", None)
    if not isinstance(layout, KcoreLayout):
        layout = None
        if reads_host(source):
            try:
                layout = KcoreLayout.load(source.host, "kcore")
            except (SourceUnavailable, OSError) as exc:
                remark(1, f"no /proc/kcore for the direct map and VMCOREINFO: {exc}")
    vmcoreinfo = base = None
    if layout is not None:
        vmcoreinfo = layout.vmcoreinfo()
        base = layout.direct_map_base()
        if vmcoreinfo is not None:
            record["vmcoreinfo"] = "/proc/kcore"
        if base is not None:
            record["direct_map_base"] = f"{base:#x}"
    if vmcoreinfo is None and reads_host(source):
        text = source.host.read_text(SYS_VMCOREINFO)
        if text:
            try:
                vmcoreinfo = vmcoreinfo_from_memory(source, text)
                record["vmcoreinfo"] = SYS_VMCOREINFO
            except (MemdumpError, ValueError) as exc:
                remark(1, f"VMCOREINFO not recorded: {exc}")
    if vmcoreinfo is None:
        remark(1, "no VMCOREINFO: the ELF core's note segment is empty")
    return ImageMeta(vmcoreinfo, base), record
