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

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from emulator.machine import ONE_MIB, Machine  # noqa: E402
from emulator.rootfs import TRUTH, write_root  # noqa: E402

SPARSE_STRIDE = ONE_MIB  # one written page per MiB of RAM


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


if __name__ == "__main__":
    kind, where, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    print(json.dumps({k: v for k, v in (dense if kind == "dense" else sparse)(where, size).items()
                      if k in ("ram", "address_space_end", "sha256_ram")}))
