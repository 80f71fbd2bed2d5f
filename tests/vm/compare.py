"""Compare what a guest wrote with the guest's RAM as the host sees it (the backing file).

The RAM file's offset is the guest physical address.  Outputs come in formats; each has a reader
that yields ``(physical start, bytes)`` regions, and one comparison serves them all:

- ``raw`` + map: the original memdump's output — regions concatenated, holes left out, the map
  (``0x%lx 0x%lx`` per line, start and first address beyond) says where each region belongs;
- ``padded``: file offset == physical address; the regions are the guest's System RAM ranges and
  every byte of the file outside them must be zero;
- ``lime``: LiME v1 records, a 32-byte ``<IIQQ8s>`` header (magic 0x4C694D45, version 1, start,
  *inclusive* end, 8 zero bytes) before each region's bytes, ascending, nothing after the last;
- ``elf``: an ELF64 core; one region per PT_LOAD (``p_paddr``, ``p_offset``, ``p_filesz``).

The readers are written from the formats' specifications, not from memdump's writers or image
readers: the check must not share a mistake with the code it checks.  Add a format by adding a
function to ``READERS`` — the checks below do not change.
"""

from __future__ import annotations

import json
import mmap
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Tuple

PAGE = 4096
ZERO_PAGE = bytes(PAGE)


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


def whole_pages(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The ranges cut to whole pages (what /proc/kcore publishes of RAM)."""
    cut = [(-(-s // PAGE) * PAGE, e // PAGE * PAGE) for s, e in ranges]
    return [(s, e) for s, e in cut if s < e]


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


Region = Tuple[int, Span]  # physical start, bytes


def map_file(path: Path) -> mmap.mmap | bytes:
    with open(path, "rb") as f:
        if not f.seek(0, 2):
            return b""
        return mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)


def read_raw(output: Path, map_path: Path | None = None,
             ram_ranges: list[tuple[int, int]] | None = None) -> Iterator[Region]:
    if map_path is None:
        raise ValueError(f"{output.name}: a raw output needs its map")
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


def data_extents(path: Path, size: int) -> Iterator[tuple[int, int]]:
    """``[start, end)`` of the file's data (SEEK_DATA/SEEK_HOLE); the whole file if unsupported."""
    fd = os.open(path, os.O_RDONLY)
    try:
        offset = 0
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == 6:  # ENXIO: no data beyond offset
                    return
                yield offset, size  # no sparse-file support: everything is data
                return
            end = os.lseek(fd, start, os.SEEK_HOLE)
            yield start, end
            offset = end
    finally:
        os.close(fd)


def first_nonzero(data: mmap.mmap | bytes, start: int, end: int) -> int | None:
    """Address of the first non-zero byte in ``data[start:end]``, or None."""
    step = 1 << 20
    zeros = bytes(step)
    for cut in range(start, end, step):
        stop = min(end, cut + step)
        chunk = data[cut:stop]
        if chunk != zeros[:stop - cut]:
            return cut + next(i for i, b in enumerate(chunk) if b)
    return None


def read_padded(output: Path, map_path: Path | None = None,
                ram_ranges: list[tuple[int, int]] | None = None) -> Iterator[Region]:
    """padded: offset == physical address; RAM where the guest has it, zeros everywhere else."""
    if not ram_ranges:
        raise ValueError(f"{output.name}: a padded output is read at the guest's RAM ranges")
    data = map_file(output)
    size = len(data)
    if size < ram_ranges[-1][1]:
        raise ValueError(f"{output.name}: {size:#x} bytes, but System RAM ends at "
                         f"{ram_ranges[-1][1]:#x}")
    gaps, cut = [], 0
    for ram_start, ram_end in ram_ranges + [(size, size)]:
        if cut < ram_start:
            gaps.append((cut, ram_start))
        cut = ram_end
    for start, end in data_extents(output, size):
        for gap_start, gap_end in gaps:
            low, high = max(start, gap_start), min(end, gap_end)
            hit = first_nonzero(data, low, high) if low < high else None
            if hit is not None:
                raise ValueError(f"{output.name}: non-zero byte at {hit:#x}, outside System RAM")
    for start, end in ram_ranges:
        yield start, Span(data, start, end - start)


LIME_HEADER = struct.Struct("<IIQQ8s")
LIME_MAGIC = 0x4C694D45


def read_lime(output: Path, map_path: Path | None = None,
              ram_ranges: list[tuple[int, int]] | None = None) -> Iterator[Region]:
    """LiME v1: header, bytes, header, bytes, ... ascending, nothing after the last record."""
    data = map_file(output)
    size, offset, last_end, number = len(data), 0, -1, 0
    if not size:
        raise ValueError(f"{output.name}: empty")
    while offset < size:
        where = f"{output.name}: record {number} at offset {offset:#x}"
        if size - offset < LIME_HEADER.size:
            raise ValueError(f"{where}: {size - offset} bytes left, less than a header")
        magic, version, start, end, reserved = LIME_HEADER.unpack(data[offset:offset + 32])
        if magic != LIME_MAGIC or version != 1:
            raise ValueError(f"{where}: magic {magic:#x} version {version}, want "
                             f"{LIME_MAGIC:#x} version 1")
        if end < start or start <= last_end or reserved != bytes(8):
            raise ValueError(f"{where}: {start:#x}-{end:#x} (inclusive) is empty, out of order, "
                             f"overlapping or has non-zero reserved bytes")
        length = end - start + 1
        if offset + 32 + length > size:
            raise ValueError(f"{where}: {length:#x} bytes announced, the file ends first")
        yield start, Span(data, offset + 32, length)
        last_end, offset, number = end, offset + 32 + length, number + 1


ELF_HEADER = struct.Struct("<16sHHIQQQIHHHHHH")
ELF_PHDR = struct.Struct("<IIQQQQQQ")
PT_LOAD, PT_NOTE, ET_CORE, EM_X86_64 = 1, 4, 4, 62


def elf_segments(data: mmap.mmap | bytes, name: str = "elf") -> list[tuple[int, ...]]:
    """The program headers of an ELF64 little-endian x86-64 core, after checking its header."""
    if len(data) < ELF_HEADER.size:
        raise ValueError(f"{name}: shorter than an ELF header")
    (ident, e_type, machine, _version, _entry, phoff, _shoff, _flags, _ehsize, phentsize,
     phnum, *_rest) = ELF_HEADER.unpack(data[:ELF_HEADER.size])
    if ident[:4] != b"\x7fELF" or ident[4] != 2 or ident[5] != 1:
        raise ValueError(f"{name}: not an ELF64 little-endian file: {ident[:6]!r}")
    if e_type != ET_CORE or machine != EM_X86_64 or phentsize != ELF_PHDR.size:
        raise ValueError(f"{name}: e_type {e_type}, e_machine {machine}, e_phentsize {phentsize}: "
                         "not an x86-64 core")
    if phnum in (0, 0xFFFF) or phoff + phnum * ELF_PHDR.size > len(data):
        raise ValueError(f"{name}: {phnum} program headers at {phoff:#x} do not fit")
    return [ELF_PHDR.unpack(data[phoff + i * ELF_PHDR.size:phoff + (i + 1) * ELF_PHDR.size])
            for i in range(phnum)]


def read_elf(output: Path, map_path: Path | None = None,
             ram_ranges: list[tuple[int, int]] | None = None) -> Iterator[Region]:
    """ELF64 core: a PT_NOTE first, then PT_LOADs in ascending, non-overlapping p_paddr, each
    ``p_filesz == p_memsz`` bytes at ``p_offset``; a known p_vaddr is paddr + one offset."""
    data = map_file(output)
    segments = elf_segments(data, output.name)
    if segments[0][0] != PT_NOTE:
        raise ValueError(f"{output.name}: the first program header is type {segments[0][0]}, "
                         "not PT_NOTE")
    loads = [s for s in segments if s[0] == PT_LOAD]
    last_end, shifts = -1, set()
    for number, (_t, _f, offset, vaddr, paddr, filesz, memsz, _a) in enumerate(loads):
        where = f"{output.name}: PT_LOAD {number} (p_paddr {paddr:#x})"
        if filesz != memsz or not filesz or offset + filesz > len(data):
            raise ValueError(f"{where}: p_filesz {filesz:#x}, p_memsz {memsz:#x}, p_offset "
                             f"{offset:#x}: empty, unequal or beyond the file")
        if paddr < last_end:
            raise ValueError(f"{where}: out of order or overlapping")
        if vaddr:
            shifts.add((vaddr - paddr) & (1 << 64) - 1)
        last_end = paddr + filesz
    if len(shifts) > 1:
        raise ValueError(f"{output.name}: p_vaddr - p_paddr differs between segments")
    for _t, _f, offset, _v, paddr, filesz, _m, _a in loads:
        yield paddr, Span(data, offset, filesz)


def elf_notes(path: Path) -> dict[str, bytes]:
    """The notes in an ELF core's PT_NOTE segments, name -> descriptor (VMCOREINFO, ...)."""
    data = map_file(path)
    notes = {}
    for p_type, _f, offset, _v, _p, filesz, _m, _a in elf_segments(data, path.name):
        cut, end = offset, offset + filesz
        while p_type == PT_NOTE and cut + 12 <= end:
            namesz, descsz, _kind = struct.unpack("<III", data[cut:cut + 12])
            name = data[cut + 12:cut + 12 + namesz].rstrip(b"\0").decode("ascii", "replace")
            desc_at = cut + 12 + (namesz + 3) // 4 * 4
            notes[name] = data[desc_at:desc_at + descsz]
            cut = desc_at + (descsz + 3) // 4 * 4
    return notes


def elf_direct_map(path: Path) -> set[int]:
    """``p_vaddr - p_paddr`` of the PT_LOADs that give a p_vaddr (one value, or none)."""
    return {(vaddr - paddr) & (1 << 64) - 1
            for p_type, _f, _o, vaddr, paddr, *_rest in elf_segments(map_file(path), path.name)
            if p_type == PT_LOAD and vaddr}


READERS: dict[str, Callable[..., Iterator[Region]]] = {
    "raw": read_raw, "padded": read_padded, "lime": read_lime, "elf": read_elf}


def subtract(left: list[tuple[int, int]], right: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of sorted ``left`` outside sorted ``right`` (half-open ranges)."""
    result = []
    for start, end in left:
        cursor = start
        for lo, hi in right:
            if hi <= cursor or lo >= end:
                continue
            if lo > cursor:
                result.append((cursor, lo))
            cursor = max(cursor, hi)
        if cursor < end:
            result.append((cursor, end))
    return result


def manifest_facts(path: Path) -> dict:
    """What the structured jobs' checks need from a memdump manifest (JSON)."""
    data = json.loads(path.read_text())
    pages = set()
    for span in data.get("zero_filled") or []:
        pages.update(range(span["start"] & ~(PAGE - 1), span["end"], PAGE))
    return {"complete": data.get("complete"), "source": data.get("source"),
            "format": data.get("format"), "zero_filled": pages,
            "regions": [(r["start"], r["end"]) for r in data.get("regions") or []],
            "skipped": data.get("skipped") or [], "error": data.get("error"),
            "unserved": [(u["start"], u["end"]) for u in data.get("unserved") or []]}


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


# Pages a structured image holds as zeros, not listed as zero-filled, that differ from RAM now:
# RAM that was zeros when read and was written since (measured: 7-15 scattered pages per 1.3 GiB
# dump), or a silent zero-fill, which would cover whole reads (1 MiB) or regions.
UNLISTED_ZERO_MAX = 256
UNLISTED_ZERO_RUN = 32


def longest_run(pages: list[int]) -> int:
    """The most consecutive pages in an ascending list of page addresses."""
    best = run = 0
    for i, page in enumerate(pages):
        run = run + 1 if i and page == pages[i - 1] + PAGE else 1
        best = max(best, run)
    return best


def compare(regions: Iterator[Region] | list[Region], ram: GuestRam, ram_ranges: list[tuple[int, int]],
            exact: dict[str, tuple[int, int]], expected: dict[str, tuple[int, bytes]] | None = None,
            min_percent: float = 99.0, full_coverage: bool = True,
            unreadable: set[int] | None = None, unreadable_as_zeros: bool = False,
            zero_filled: set[int] | None = None,
            zero_filled_expected: set[int] | None = None) -> Comparison:
    """Compare every region with guest RAM.

    ``exact``: ranges that must be 100 % identical (kernel text).  ``expected``: ``name ->
    (address, bytes)`` that both the output and RAM must hold (a pattern page).  Every page of the
    output counts in the identical-page percentage, which must reach ``min_percent``; every byte
    must lie in System RAM.

    ``unreadable`` (page addresses the kernel marks offline/poisoned): by default they must not be
    in the output (a raw dump skips them) and ``full_coverage`` means all other RAM is there; with
    ``unreadable_as_zeros`` (a structured format, or a source that pads them) they must be in it as
    zeros and ``full_coverage`` means every byte of System RAM is there.

    ``zero_filled`` (structured formats): the pages the manifest says were zero-filled; each must
    be zeros in the output, and the set must equal ``zero_filled_expected`` when that is given.
    Pages that are zeros in the output, differ from RAM and are not listed are counted
    (``unlisted_zero``): RAM that was zeros when read and written since, or a silent zero-fill.
    """
    unreadable = unreadable or set()
    served_unreadable = 0
    nonzero_unreadable: list[int] = []
    nonzero_filled: list[int] = []
    zero_filled_seen: set[int] = set()
    unlisted_zero: list[int] = []
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
        truth = ram.view(start, end)
        # page-granular identity (partial pages at region edges count as pages)
        cut = start
        while cut < end:
            stop = min(end, (cut // PAGE + 1) * PAGE)
            page = cut & ~(PAGE - 1)
            result.pages += 1
            got = data[cut - start:stop - start]
            is_zero = None
            if page in unreadable:
                served_unreadable += 1
                is_zero = got == ZERO_PAGE[:stop - cut]
                if unreadable_as_zeros and not is_zero:
                    nonzero_unreadable.append(page)
            if zero_filled is not None and page in zero_filled:
                zero_filled_seen.add(page)
                is_zero = got == ZERO_PAGE[:stop - cut] if is_zero is None else is_zero
                if not is_zero:
                    nonzero_filled.append(page)
            if got == truth[cut - start:stop - start]:
                result.identical += 1
            else:
                if len(result.differing) < 100000:
                    result.differing.append(page)
                if zero_filled is not None and page not in zero_filled and (
                        is_zero if is_zero is not None else got == ZERO_PAGE[:stop - cut]):
                    unlisted_zero.append(page)
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
    if unreadable and not unreadable_as_zeros:
        result.checks["unreadable pages left out"] = (
            f"ok {len(unreadable)} pages" if not served_unreadable
            else f"FAIL {served_unreadable} of {len(unreadable)} offline/poisoned pages were dumped")
    if unreadable and unreadable_as_zeros:
        result.checks["unreadable pages as zeros"] = (
            f"FAIL {len(nonzero_unreadable)} offline/poisoned pages hold data, first "
            f"{nonzero_unreadable[0]:#x}" if nonzero_unreadable else
            f"ok {served_unreadable} of {len(unreadable)} pages, all zeros")
    if zero_filled is not None:
        missing = zero_filled - zero_filled_seen
        wrong = (zero_filled ^ zero_filled_expected) if zero_filled_expected is not None else set()
        verdict = "ok"
        if nonzero_filled:
            verdict = f"FAIL {len(nonzero_filled)} listed pages hold data, first {nonzero_filled[0]:#x}"
        elif missing:
            verdict = f"FAIL {len(missing)} listed pages are not in the output"
        elif wrong:
            verdict = (f"FAIL the manifest lists {len(zero_filled)} pages, expected "
                       f"{len(zero_filled_expected or ())}; first difference {min(wrong):#x}")
        result.checks["zero-filled pages (manifest)"] = f"{verdict} ({len(zero_filled)} listed)"
        run = longest_run(unlisted_zero)
        result.checks["unlisted zero pages"] = (
            f"{'ok' if len(unlisted_zero) <= UNLISTED_ZERO_MAX and run < UNLISTED_ZERO_RUN else 'FAIL'}"
            f" {len(unlisted_zero)} zero in the output, not in RAM now (longest run {run})"
            + (f", first {unlisted_zero[0]:#x}" if unlisted_zero else ""))
    if full_coverage:
        covered = sum(e - s for s, e in result.regions)
        total = sum(e - s for s, e in ram_ranges)
        skipped = 0 if unreadable_as_zeros else sum(
            min(end, page + PAGE) - max(start, page) for page in unreadable
            for start, end in ram_ranges if start < page + PAGE and page < end)
        result.checks["coverage"] = (
            f"ok {covered} of {total} RAM bytes ({skipped} unreadable left out)"
            if covered == total - skipped
            else f"FAIL {covered} of {total} RAM bytes dumped, {skipped} unreadable left out")
    result.checks["identical pages"] = (
        f"{'ok' if result.percent >= min_percent else 'FAIL'} {result.identical}/{result.pages} "
        f"({result.percent:.2f} %, need {min_percent} %)")
    return result
