"""The benchmark's machines: fake roots written by the emulator (``memdump --root DIR``).

* ``dense`` -- every RAM page written: the image the timings read, held in the page cache.
* ``sparse`` -- the same layout with one page per MiB written and the rest left as holes in
  ``dev/mem`` (reading as zeros): an 8 GiB machine that costs a few MiB of disk, for measuring
  peak memory against RAM size. Its ``truth.json`` says so and carries no RAM digest.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from emulator.machine import ONE_MIB, Machine  # noqa: E402
from emulator.rootfs import TRUTH, write_root  # noqa: E402

SPARSE_STRIDE = ONE_MIB  # one written page per MiB of RAM
SHM = "/dev/shm"


def dense(path: str, ram: int, seed: int = 1) -> dict:
    """A machine of about ``ram`` bytes of RAM, every page written; returns its truth."""
    return write_root(Machine(seed=seed, ram_size=ram), path, kcore=False)


def sparse(path: str, ram: int, seed: int = 1) -> dict:
    """The same layout as ``dense`` with most pages left unwritten (holes read as zeros)."""
    machine = Machine(seed=seed, ram_size=ram)
    machine.digest = lambda: None  # the truth's digest would hash every page: not wanted here
    truth = write_root(machine, path, kcore=False, devmem=False)
    fd = os.open(os.path.join(path, "dev", "mem"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, machine.address_space_end)
        for r in machine.ram:
            start = r.start - r.start % machine.page_size
            for page in range(start, r.end, SPARSE_STRIDE):
                lo, hi = max(page, r.start), min(page + machine.page_size, r.end)
                os.pwrite(fd, machine.contents(lo, hi), lo)
    finally:
        os.close(fd)
    truth["devmem"] = f"sparse: one page per {SPARSE_STRIDE >> 20} MiB of RAM written, the rest zeros"
    with open(os.path.join(path, TRUTH), "w") as handle:
        json.dump(truth, handle, indent=1)
        handle.write("\n")
    return truth



@dataclass
class Machines:
    """The timed machine (``root``, its ``truth`` and dev/mem ``image``) and the sparse one for
    peak memory (``big_root``)."""

    root: str
    truth: dict
    image: str
    ram_bytes: int
    big_root: str
    big_ram: int


def ram_size(truth: dict) -> int:
    return sum(end - start for start, end in truth["ram"])


def sparse_parent(work: str, chosen_work: bool, made: list[str]) -> str:
    """Where the sparse machine goes. Its holes would fill the page cache with zeros when read
    from a disk file system (8 GiB of them); tmpfs serves holes from the zero page, so it goes
    there when it can -- unless the caller chose the work directory. Directories made here are
    added to ``made`` (for removal)."""
    if not chosen_work and os.path.isdir(SHM) and os.access(SHM, os.W_OK):
        parent = tempfile.mkdtemp(prefix="memdump-bench-", dir=SHM)
        made.append(parent)
        return parent
    return work


def warm(path: str) -> float:
    """Read a file once (into the page cache); returns the seconds it took."""
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as handle:
        while handle.read(16 * ONE_MIB):
            pass
    return time.perf_counter() - start


def prepare(work: str, ram: int, big: int, chosen_work: bool, made: list[str], say) -> Machines:
    """Write both machines and read the timed one's image twice, so that it sits in the page
    cache: the disk is not what is measured."""
    root = os.path.join(work, f"ram{ram >> 20}m")
    began = time.perf_counter()
    truth = dense(root, ram)
    image = os.path.join(root, "dev", "mem")
    ram_bytes = ram_size(truth)
    say(f"machine: {len(truth['ram'])} RAM ranges, {ram_bytes} bytes of RAM, dev/mem {os.path.getsize(image)} "
        f"bytes, written in {time.perf_counter() - began:.1f} s")
    big_root = os.path.join(sparse_parent(work, chosen_work, made), f"ram{big >> 20}m-sparse")
    big_truth = sparse(big_root, big)
    big_ram = ram_size(big_truth)
    say(f"sparse machine for peak memory: {len(big_truth['ram'])} RAM ranges, {big_ram} bytes of RAM, in {big_root}")
    for _ in range(2):
        cached = warm(image)
    say(f"dev/mem read from the page cache in {cached:.2f} s ({os.path.getsize(image) / cached / 1e9:.1f} GB/s)")
    return Machines(root, truth, image, ram_bytes, big_root, big_ram)


if __name__ == "__main__":
    kind, where, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    print(json.dumps({k: v for k, v in (dense if kind == "dense" else sparse)(where, size).items()
                      if k in ("ram", "address_space_end", "sha256_ram")}))
