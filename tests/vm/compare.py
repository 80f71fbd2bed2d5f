"""Compare what a guest wrote with the guest's RAM as the host sees it (the backing file).

The RAM file's offset is the guest physical address.  Outputs come in formats; each has a reader
that yields ``(physical start, bytes)`` regions, and one comparison serves them all:

- ``raw`` + map: the original memdump's output — regions concatenated, holes left out, the map
  (``0x%lx 0x%lx`` per line, start and first address beyond) says where each region belongs.

Add a format by adding a function to ``READERS`` (padded: offset == address; lime: 32-byte
headers; elf: PT_LOAD segments) — the checks below do not change.
"""

from __future__ import annotations

import mmap
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

PAGE = 4096


def parse_map(text: str) -> list[tuple[int, int]]:
    """Map lines ``0x%lx 0x%lx`` -> half-open ranges, checked for shape and order."""
    regions = []
    for number, line in enumerate(text.splitlines(), 1):
        m = re.fullmatch(r"0x([0-9a-f]+) 0x([0-9a-f]+)", line)
        if not m:
            raise ValueError(f"map line {number}: {line!r} is not '0x%lx 0x%lx'")
        start, end = int(m.group(1), 16), int(m.group(2), 16)
        if end <= start or (regions and start < regions[-1][1]):
            raise ValueError(f"map line {number}: {line!r} empty, overlapping or out of order")
        regions.append((start, end))
    return regions


def iomem_ranges(text: str, names: tuple[str, ...] = ("System RAM",)) -> list[tuple[int, int]]:
    """Half-open ranges of iomem entries whose name starts with one of ``names``, merged."""
    found = []
    for line in text.splitlines():
        m = re.match(r"\s*([0-9a-f]+)-([0-9a-f]+) : (.*)$", line)
        if m and m.group(3).startswith(names):
            found.append((int(m.group(1), 16), int(m.group(2), 16) + 1))
    merged: list[tuple[int, int]] = []
    for start, end in sorted(found):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def iomem_entry(text: str, name: str) -> tuple[int, int] | None:
    for line in text.splitlines():
        m = re.match(r"\s*([0-9a-f]+)-([0-9a-f]+) : (.*)$", line)
        if m and m.group(3) == name:
            return int(m.group(1), 16), int(m.group(2), 16) + 1
    return None


def pattern_page() -> bytes:
    """The page mdtool's ``pattern`` command fills (must match pattern_word() in mdtool.c)."""
    mask = (1 << 64) - 1
    return b"".join(struct.pack("<Q", 0x4D454D44554D5021 ^ ((i * 0x9E3779B97F4A7C15) & mask))
                    for i in range(PAGE // 8))


# ---------------------------------------------------------------------------------------------
# readers: output file(s) -> regions


class Span:
    """``length`` bytes at ``offset`` of a mapped file; slicing gives bytes.

    (Slicing an mmap yields bytes and compares with memcmp: 40x faster than memoryview ==.)
    """

    def __init__(self, mm: mmap.mmap | bytes, offset: int, length: int) -> None:
        self.mm, self.offset, self.length = mm, offset, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, s: slice) -> bytes:
        return self.mm[self.offset + s.start:self.offset + s.stop]


Region = tuple[int, Span]  # physical start, bytes


def map_file(path: Path) -> mmap.mmap | bytes:
    with open(path, "rb") as f:
        if not f.seek(0, 2):
            return b""
        return mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)


def read_raw(output: Path, map_path: Path) -> Iterator[Region]:
    regions = parse_map(map_path.read_text())
    size = output.stat().st_size
    want = sum(end - start for start, end in regions)
    if size != want:
        raise ValueError(f"{output.name}: {size} bytes, but the map describes {want}")
    data = map_file(output)
    offset = 0
    for start, end in regions:
        yield start, Span(data, offset, end - start)
        offset += end - start


READERS: dict[str, Callable[..., Iterator[Region]]] = {"raw": read_raw}


# ---------------------------------------------------------------------------------------------
# comparison


@dataclass
class Comparison:
    """Page-by-page verdict of one output against guest RAM."""

    pages: int = 0
    identical: int = 0
    bytes: int = 0
    regions: list[tuple[int, int]] = field(default_factory=list)
    outside_ram: list[tuple[int, int]] = field(default_factory=list)
    differing: list[int] = field(default_factory=list)   # physical page addresses
    checks: dict[str, str] = field(default_factory=dict)  # name -> "ok ..." / "FAIL ..."

    @property
    def percent(self) -> float:
        return 100.0 * self.identical / self.pages if self.pages else 0.0

    def failed(self) -> list[str]:
        return [f"{name}: {verdict}" for name, verdict in self.checks.items()
                if verdict.startswith("FAIL")]


class GuestRam:
    """The guest's RAM through its backing files: physical address -> bytes.

    ``windows``: ``(guest physical base, file)`` per memory backend — the boot RAM at 0, a
    virtio-mem device's memory at the device's address.
    """

    def __init__(self, windows: list[tuple[int, Path]] | Path) -> None:
        if isinstance(windows, Path):
            windows = [(0, windows)]
        self.windows = [(base, map_file(path)) for base, path in sorted(windows)]

    def view(self, start: int, end: int) -> Span:
        for base, data in self.windows:
            if base <= start and end <= base + len(data):
                return Span(data, start - base, end - start)
        raise ValueError(f"0x{start:x}-0x{end:x} is in no RAM backing file")

    def read(self, start: int, end: int) -> bytes:
        return self.view(start, end)[0:end - start]

    def close(self) -> None:
        for _, data in self.windows:
            if isinstance(data, mmap.mmap):
                data.close()


# /proc/kpageflags bits of pages the module must refuse (hardware poison, no memmap, offline)
KPF_UNREADABLE = (1 << 19) | (1 << 20) | (1 << 23)


def unreadable_pages(kpageflags: bytes, ram_ranges: list[tuple[int, int]]) -> set[int]:
    """Addresses of RAM pages that /proc/kpageflags marks hwpoison, nopage or offline."""
    pages = set()
    for start, end in ram_ranges:
        for pfn in range(start // PAGE, (end - 1) // PAGE + 1):
            flags = int.from_bytes(kpageflags[pfn * 8:pfn * 8 + 8], "little")
            if flags & KPF_UNREADABLE:
                pages.add(pfn * PAGE)
    return pages


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int] | None:
    start, end = max(a[0], b[0]), min(a[1], b[1])
    return (start, end) if start < end else None


def compare(regions: Iterator[Region] | list[Region], ram: GuestRam, ram_ranges: list[tuple[int, int]],
            exact: dict[str, tuple[int, int]], expected: dict[str, tuple[int, bytes]] | None = None,
            min_percent: float = 99.0, full_coverage: bool = True,
            unreadable: set[int] | None = None) -> Comparison:
    """Compare every region with guest RAM.

    ``exact``: ranges that must be 100 % identical (kernel text).  ``expected``: ``name ->
    (address, bytes)`` that both the output and RAM must hold (a pattern page).  Every page of the
    output counts in the identical-page percentage, which must reach ``min_percent``; every byte
    must lie in System RAM; with ``full_coverage`` the output must cover all of it except the
    ``unreadable`` pages (page addresses), which must not be in it.
    """
    unreadable = unreadable or set()
    served_unreadable = 0
    result = Comparison()
    exact_hits = {name: 0 for name in exact}
    exact_bad = {name: 0 for name in exact}
    found = {name: False for name in (expected or {})}
    for start, data in regions:
        end = start + len(data)
        result.regions.append((start, end))
        result.bytes += len(data)
        if not any(rs <= start and end <= re_ for rs, re_ in ram_ranges):
            result.outside_ram.append((start, end))
        served_unreadable += sum(1 for page in range(start & ~(PAGE - 1), end, PAGE)
                                 if page in unreadable) if unreadable else 0
        truth = ram.view(start, end)
        # page-granular identity (partial pages at region edges count as pages)
        cut = start
        while cut < end:
            stop = min(end, (cut // PAGE + 1) * PAGE)
            result.pages += 1
            if data[cut - start:stop - start] == truth[cut - start:stop - start]:
                result.identical += 1
            elif len(result.differing) < 100000:
                result.differing.append(cut & ~(PAGE - 1))
            cut = stop
        for name, rng in exact.items():
            o = _overlap((start, end), rng)
            if o:
                exact_hits[name] += o[1] - o[0]
                if data[o[0] - start:o[1] - start] != truth[o[0] - start:o[1] - start]:
                    exact_bad[name] += 1
        for name, (address, content) in (expected or {}).items():
            if start <= address and address + len(content) <= end:
                got = data[address - start:address - start + len(content)]
                live = truth[address - start:address - start + len(content)]
                found[name] = True
                result.checks[name] = ("ok identical in dump and RAM" if got == content == live
                                       else f"FAIL dump {'ok' if got == content else 'differs'}, "
                                            f"RAM {'ok' if live == content else 'differs'}")
    for name, rng in exact.items():
        size = rng[1] - rng[0]
        if exact_hits[name] != size:
            result.checks[name] = f"FAIL covered {exact_hits[name]} of {size} bytes"
        elif exact_bad[name]:
            result.checks[name] = "FAIL differs from guest RAM"
        else:
            result.checks[name] = f"ok {size} bytes identical"
    for name, ok in found.items():
        if not ok:
            result.checks[name] = "FAIL not in the output"
    result.checks["in System RAM"] = (
        "ok" if not result.outside_ram else
        f"FAIL {len(result.outside_ram)} regions outside System RAM, first "
        f"0x{result.outside_ram[0][0]:x}-0x{result.outside_ram[0][1]:x}")
    if unreadable:
        result.checks["unreadable pages left out"] = (
            f"ok {len(unreadable)} pages" if not served_unreadable
            else f"FAIL {served_unreadable} of {len(unreadable)} offline/poisoned pages were dumped")
    if full_coverage:
        covered = sum(e - s for s, e in result.regions)
        total = sum(e - s for s, e in ram_ranges)
        skipped = sum(min(end, page + PAGE) - max(start, page) for page in unreadable
                      for start, end in ram_ranges if start < page + PAGE and page < end)
        result.checks["coverage"] = (
            f"ok {covered} of {total} RAM bytes ({skipped} unreadable)" if covered == total - skipped
            else f"FAIL {covered} of {total} RAM bytes dumped, {skipped} unreadable")
    result.checks["identical pages"] = (
        f"{'ok' if result.percent >= min_percent else 'FAIL'} {result.identical}/{result.pages} "
        f"({result.percent:.2f} %, need {min_percent} %)")
    return result
