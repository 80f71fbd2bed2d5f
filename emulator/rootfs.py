"""Lay an emulated machine out as a fake root directory for ``memdump --root DIR``.

``dev/mem`` is a sparse image (file offset = physical address, RAM pages written, everything else
a hole reading as zeros), ``proc/kcore`` a compact ELF core with the kernel's segment layout,
``proc/iomem`` the map, ``truth.json`` everything a test needs to rebuild the truth.
"""

from __future__ import annotations

import json
import os

from memdump import elf64
from memdump.iomem import Iomem, Resource
from emulator.faults import Faults
from emulator.machine import ONE_MIB, Machine
from emulator.truth import TRUTH, load_truth  # noqa: F401 -- where tests and tools find them

CHUNK = 4 * ONE_MIB


def _write(root: str, relative: str, data: bytes | str, mode: int = 0o644) -> str:
    path = os.path.join(root, relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data.encode() if isinstance(data, str) else data)
    os.chmod(path, mode)
    return path


def _hidden(iomem: Iomem) -> Iomem:
    """The view of a reader without CAP_SYS_ADMIN: same names, every address zero."""
    def blank(node: Resource) -> Resource:
        return Resource(0, 1, node.name, node.depth, [blank(c) for c in node.children])
    return Iomem([blank(r) for r in iomem.resources])


def write_devmem(machine: Machine, path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, machine.address_space_end)
        for r in machine.ram:
            for address in range(r.start, r.end, CHUNK):
                os.pwrite(fd, machine.contents(address, min(address + CHUNK, r.end)), address)
    finally:
        os.close(fd)


def write_kcore(machine: Machine, path: str, paddr_style: str = "real") -> None:
    """An ELF64 core laid out like /proc/kcore: a VMCOREINFO note, then text, one direct-map
    segment per RAM range, modules and vmalloc (p_paddr -1). ``paddr_style="zero"`` writes every
    p_paddr as 0, as kernels before 4.11 did."""
    note = elf64.pack_note(elf64.Note(b"VMCOREINFO", 0, vmcoreinfo(machine).encode()))
    segments = machine.kcore_segments()
    phnum = 1 + len(segments)
    offset = elf64.EHDR.size + elf64.PHDR.size * phnum
    headers = [elf64.Segment(elf64.PT_NOTE, 0, offset, 0, 0, len(note), 0, 0)]
    offset += len(note)
    offset = -(-offset // machine.page_size) * machine.page_size
    bodies = []
    for kind, vaddr, paddr, size in segments:
        if paddr_style == "zero":
            recorded = 0
        else:
            recorded = elf64.NO_PADDR if paddr is None else paddr
        headers.append(elf64.Segment(elf64.PT_LOAD, 7, offset, vaddr, recorded, size, size,
                                     machine.page_size))
        if kind != "vmalloc":  # vmalloc is never read: its bytes are not stored
            bodies.append((offset, kind, paddr, size))
            offset += size
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o400)
    try:
        blob = elf64.pack_header(elf64.ET_CORE, elf64.EM_X86_64, phnum)
        blob += b"".join(h.pack() for h in headers) + note
        os.pwrite(fd, blob, 0)
        for at, kind, paddr, size in bodies:
            if kind == "modules":
                os.pwrite(fd, machine.module_area()[:size], at)
                continue
            for done in range(0, size, CHUNK):
                piece = min(CHUNK, size - done)
                os.pwrite(fd, machine.contents(paddr + done, paddr + done + piece), at + done)
    finally:
        os.close(fd)


def vmcoreinfo(machine: Machine) -> str:
    return (f"OSRELEASE={machine.release}\nPAGESIZE={machine.page_size}\n"
            f"KERNELOFFSET={machine.kaslr_slide:x}\nNUMBER(phys_base)=0\n")


def write_root(machine: Machine, out: str, *, strict_devmem: bool = False, lockdown: str | None = None,
               kcore: bool = True, kcore_paddr: str = "real", devmem: bool = True,
               hidden_iomem: bool = False, behaviour: str = "module", faults: Faults | None = None,
               kmod: bool = False, granularity: int = 1) -> dict:
    """Write the fake root; returns the truth it also stores in ``truth.json``."""
    os.makedirs(out, exist_ok=True)
    iomem = _hidden(machine.iomem) if hidden_iomem else machine.iomem
    _write(out, "proc/iomem", iomem.format())
    _write(out, "proc/sys/kernel/osrelease", machine.release + "\n")
    _write(out, "proc/sys/kernel/hostname", f"emulated-{machine.seed}\n")
    _write(out, f"boot/config-{machine.release}",
           "CONFIG_DEVMEM=y\nCONFIG_PROC_KCORE=y\n"
           + ("CONFIG_STRICT_DEVMEM=y\nCONFIG_IO_STRICT_DEVMEM=y\n" if strict_devmem
              else "# CONFIG_STRICT_DEVMEM is not set\n"))
    modes = ["none", "integrity", "confidentiality"]
    chosen = lockdown or "none"
    _write(out, "sys/kernel/security/lockdown",
           " ".join(f"[{m}]" if m == chosen else m for m in modes) + "\n")
    os.makedirs(os.path.join(out, "dev"), exist_ok=True)
    if devmem:
        write_devmem(machine, os.path.join(out, "dev", "mem"))
    if kmod:
        # The module's device as a file: the same image (a hard link costs no space) and the
        # directory the kernel creates for a loaded module.
        if not devmem:
            write_devmem(machine, os.path.join(out, "dev", "mem"))
        os.link(os.path.join(out, "dev", "mem"), os.path.join(out, "dev", "memdump"))
        os.makedirs(os.path.join(out, "sys", "module", "memdump"), exist_ok=True)
    if kcore:
        write_kcore(machine, os.path.join(out, "proc", "kcore"), kcore_paddr)
    truth = {
        "emulator": machine.to_dict(),
        "ram": [[r.start, r.end] for r in machine.ram],
        "address_space_end": machine.address_space_end,
        "kernel_code": list(machine.kernel_code()),
        "kcore_segments": [[k, v, p, s] for k, v, p, s in machine.kcore_segments()],
        "strict_devmem": strict_devmem,
        "lockdown": chosen,
        "behaviour": behaviour,
        "faults": (faults or Faults()).to_dict(),
        "granularity": granularity,
        "sha256_ram": machine.digest(),
    }
    _write(out, TRUTH, json.dumps(truth, indent=1) + "\n")
    return truth
