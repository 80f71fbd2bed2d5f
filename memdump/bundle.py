"""What analysis needs of the kernel an image comes from, captured beside the image.

A bundle is a directory (created, never reused: it must not exist yet, or be empty) holding
copies of the kernel's own files under plain names, and the Volatility 3 symbol table built from
them:

    version      /proc/version: the banner Volatility matches the image by
    btf          /sys/kernel/btf/vmlinux: every type of the kernel
    kallsyms     /proc/kallsyms: every symbol's address (as root, kptr_restrict <= 1)
    vmcoreinfo   the kernel's VMCOREINFO text (from the memory source)
    notes        /sys/kernel/notes: the kernel's ELF notes (its build id)
    modules      /proc/modules
    cmdline      /proc/cmdline
    os-release   /etc/os-release
    linux/<release>.json.xz   the ISF (``vol -s DIR``); left out, with the reason, when the
                 kernel has no BTF or kallsyms shows no addresses

``memdump.symbols.from_bundle`` reads the same directory on another machine. ``kernel_facts``
is what the manifest records of the kernel: its release, build id, KASLR offset and paging mode.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from memdump import elf64
from memdump.errors import MemdumpError, UsageError
from memdump.facts import MachineFacts
from memdump.host import Host

NT_GNU_BUILD_ID = 3
FILES = {"version": "/proc/version", "btf": "/sys/kernel/btf/vmlinux", "kallsyms": "/proc/kallsyms",
         "notes": "/sys/kernel/notes", "modules": "/proc/modules", "cmdline": "/proc/cmdline",
         "os-release": "/etc/os-release"}


def _vmcoreinfo_fields(text: Optional[bytes]) -> Dict[str, str]:
    fields = {}
    for line in (text or b"").decode("ascii", "replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key] = value.strip()
    return fields


def build_id(notes: Optional[bytes]) -> Optional[str]:
    """The kernel's GNU build id (hex) from the bytes of /sys/kernel/notes."""
    try:
        for note in elf64.parse_notes(notes or b""):
            if note.name == b"GNU" and note.type == NT_GNU_BUILD_ID:
                return note.desc.hex()
    except (ValueError, elf64.ElfFormatError):
        pass
    return None


def kernel_facts(host: Host, facts: MachineFacts) -> Dict[str, object]:
    """The manifest's ``kernel``: release, build id, KASLR offset and paging mode (4 or 5
    levels, from VMCOREINFO), each None when unknown."""
    fields = _vmcoreinfo_fields(facts.vmcoreinfo)
    offset = fields.get("KERNELOFFSET")
    levels = fields.get("NUMBER(pgtable_l5_enabled)")
    return {
        "release": host.kernel_release(),
        "build_id": build_id(host.read_bytes("/sys/kernel/notes")),
        "kaslr_offset": f"0x{offset}" if offset else None,
        "paging_levels": 5 if levels == "1" else 4 if levels == "0" else None,
    }


@dataclass
class Bundle:
    """What was saved where, and what could not be."""

    directory: str
    saved: List[str] = field(default_factory=list)
    missing: Dict[str, str] = field(default_factory=dict)  # name -> why
    isf: Optional[str] = None


def _write(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def prepare(directory: str) -> None:
    """Create ``directory`` (or accept an empty one) before the dump's first byte; UsageError
    otherwise, so nothing of an earlier capture is mixed in or overwritten."""
    try:
        os.makedirs(directory, mode=0o700)
    except FileExistsError:
        if not os.path.isdir(directory) or os.listdir(directory):
            raise UsageError(f"--symbols {directory}: exists and is not an empty directory") from None
    except OSError as exc:
        raise UsageError(f"--symbols {directory}: {exc.strerror}") from None


def capture(directory: str, host: Host, facts: MachineFacts) -> Bundle:
    """Copy the kernel's files into ``directory`` (made by ``prepare``) and build the ISF there.
    A file the kernel does not have is listed in ``missing`` with the reason, not an error."""
    bundle = Bundle(directory)
    for name, source in FILES.items():
        data = host.read_bytes(source)
        if data is None:
            bundle.missing[name] = f"cannot read {source}"
            continue
        _write(os.path.join(directory, name), data)
        bundle.saved.append(name)
    if facts.vmcoreinfo is not None:
        _write(os.path.join(directory, "vmcoreinfo"), facts.vmcoreinfo)
        bundle.saved.append("vmcoreinfo")
    else:
        bundle.missing["vmcoreinfo"] = "the memory source found no VMCOREINFO"
    if "btf" in bundle.missing:
        bundle.missing["isf"] = ("no /sys/kernel/btf/vmlinux: the kernel was built without "
                                 "CONFIG_DEBUG_INFO_BTF; build the ISF with dwarf2json from its debug package")
        return bundle
    from memdump import symbols  # only a dump that captures symbols pays for it

    try:
        isf = symbols.from_bundle(directory)
    except MemdumpError as exc:
        bundle.missing["isf"] = str(exc)
        return bundle
    os.makedirs(os.path.join(directory, "linux"), mode=0o700, exist_ok=True)
    path = os.path.join(directory, "linux", f"{host.kernel_release()}.json.xz")
    symbols.write_isf(isf, path)
    bundle.isf = path
    return bundle
