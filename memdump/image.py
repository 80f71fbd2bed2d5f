"""Reading images back: detect the format, list the regions, check the structure.

Detection: LiME by its magic, ELF by its magic, raw or padded when a map is given (``--map``) or
``IMAGE.map`` exists (raw when the file is as long as the map's regions together, padded when it
ends where the last region ends); anything else is "unknown" (padded, or raw without its map),
one region from address 0. Every defect a damaged file can have (truncated header, bad magic,
a record running past the end, overlapping records) is an ImageError naming the offset.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from typing import Iterator, Sequence

from memdump import elf64
from memdump.errors import ImageError, UsageError
from memdump.formats import lime
from memdump.formats.base import ImageMeta, Placed
from memdump.iomem import Range

CHUNK = 4 << 20
LIME_MAGIC_BYTES = lime.MAGIC.to_bytes(4, "little")  # b"EMiL"
_MAP_LINE = re.compile(r"^0x([0-9a-fA-F]+) 0x([0-9a-fA-F]+)$")


@dataclass
class Image:
    """An opened image: its format, its regions (where each sits in the file) and its notes."""

    path: str
    format: str
    file_size: int
    regions: list[Placed]
    fd: int = -1
    notes: list[elf64.Note] = field(default_factory=list)
    map_path: str | None = None
    remarks: list[str] = field(default_factory=list)
    direct_map_base: int | None = None  # ELF: p_vaddr - p_paddr, when every segment agrees

    @property
    def memory_bytes(self) -> int:
        return sum(p.size for p in self.regions)

    def meta(self) -> ImageMeta:
        """What an ELF image records beyond its bytes (kept when converting ELF to ELF)."""
        vmcoreinfo = next((n.desc for n in self.notes if n.name == b"VMCOREINFO"), None)
        return ImageMeta(vmcoreinfo, self.direct_map_base)

    def read(self, offset: int, size: int) -> bytes:
        """``size`` bytes at file ``offset``; ImageError if the file ends first."""
        parts, done = [], 0
        while done < size:
            piece = os.pread(self.fd, min(size - done, CHUNK), offset + done)
            if not piece:
                raise ImageError(self.path, offset + done, "image ends early (was it truncated?)")
            parts.append(piece)
            done += len(piece)
        return b"".join(parts)

    def chunks(self, start: int = 0, end: int | None = None, size: int = CHUNK) -> Iterator[bytes]:
        """The file's bytes ``[start, end)`` in pieces (for digests and copies)."""
        end = self.file_size if end is None else end
        offset = start
        while offset < end:
            piece = os.pread(self.fd, min(size, end - offset), offset)
            if not piece:
                raise ImageError(self.path, offset, "image ends early (was it truncated?)")
            yield piece
            offset += len(piece)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "Image":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def describe(self) -> dict:
        meta = self.meta()
        return {
            "path": self.path,
            "format": self.format,
            "file_size": self.file_size,
            "memory_bytes": self.memory_bytes,
            "map": self.map_path,
            "regions": [{"start": p.start, "end": p.end, "size": p.size, "offset": p.offset}
                        for p in self.regions],
            "vmcoreinfo": meta.vmcoreinfo.decode("utf-8", "replace") if meta.vmcoreinfo else None,
            "direct_map_base": f"{meta.direct_map_base:#x}" if meta.direct_map_base is not None else None,
            "remarks": list(self.remarks),
        }


# -- maps -------------------------------------------------------------------------------------------

def read_map(path: str) -> list[Range]:
    """A ``-m`` map: one ``0x<start> 0x<end>`` line per region, ascending, non-overlapping."""
    try:
        with open(path, "rb") as handle:
            blob = handle.read()
    except OSError as exc:
        raise UsageError(f"--map {path}: {exc.strerror}") from None
    ranges: list[Range] = []
    offset = 0
    for number, raw in enumerate(blob.split(b"\n"), 1):
        line = raw.decode("ascii", "replace").strip()
        here, offset = offset, offset + len(raw) + 1
        if not line:
            continue
        match = _MAP_LINE.match(line)
        if not match:
            raise ImageError(path, here, f"map line {number}: expected '0x<start> 0x<end>', got {line[:60]!r}")
        start, end = int(match.group(1), 16), int(match.group(2), 16)
        if end <= start:
            raise ImageError(path, here, f"map line {number}: end {end:#x} is not after start {start:#x}")
        if ranges and start < ranges[-1].end:
            raise ImageError(path, here, f"map line {number}: region {start:#x}-{end:#x} overlaps or "
                                         f"precedes the one ending at {ranges[-1].end:#x}")
        ranges.append(Range(start, end))
    if not ranges:
        raise ImageError(path, 0, "map lists no regions")
    return ranges


def place(ranges: Sequence[Range], fmt: str) -> list[Placed]:
    """Where raw or padded images keep each region."""
    if fmt == "padded":
        return [Placed(r.start, r.end, r.start) for r in ranges]
    placed, offset = [], 0
    for r in ranges:
        placed.append(Placed(r.start, r.end, offset))
        offset += r.end - r.start
    return placed


def _mapped(path: str, size: int, ranges: list[Range], map_path: str, fmt: str | None = None) -> tuple[str, list[Placed]]:
    total = sum(r.end - r.start for r in ranges)
    last = ranges[-1].end
    if fmt is None:
        fmt = "raw" if size == total else "padded" if size == last else None
        if fmt is None:
            raise ImageError(path, min(size, total), f"image is {size:#x} bytes, but its map {map_path} "
                             f"describes {total:#x} bytes (raw) or memory up to {last:#x} (padded)")
    expected = total if fmt == "raw" else last
    if size != expected:
        raise ImageError(path, min(size, expected), f"{fmt} image is {size:#x} bytes, expected {expected:#x} "
                         f"from {map_path}" + (" (truncated?)" if size < expected else ""))
    return fmt, place(ranges, fmt)


# -- LiME and ELF -------------------------------------------------------------------------------------

def _lime(image: Image) -> None:
    offset, size = 0, image.file_size
    header = lime.HEADER
    previous_end: int | None = None
    while offset < size:
        blob = os.pread(image.fd, header.size, offset)
        if len(blob) < header.size:
            raise ImageError(image.path, offset, f"truncated LiME header ({len(blob)} of {header.size} bytes)")
        magic, version, start, last, _reserved = header.unpack(blob)
        if magic != lime.MAGIC:
            raise ImageError(image.path, offset, f"bad LiME magic {magic:#010x} (expected {lime.MAGIC:#010x})")
        if version != lime.VERSION:
            raise ImageError(image.path, offset, f"unsupported LiME version {version}")
        if last < start:
            raise ImageError(image.path, offset, f"LiME record ends ({last:#x}) before it starts ({start:#x})")
        if previous_end is not None and start < previous_end:
            raise ImageError(image.path, offset, f"LiME record {start:#x}-{last:#x} overlaps or precedes "
                                                 f"the previous one (ending at {previous_end - 1:#x})")
        length = last - start + 1
        data = offset + header.size
        if data + length > size:
            raise ImageError(image.path, offset, f"LiME record {start:#x}-{last:#x} runs past the end of the "
                                                 f"file ({length:#x} bytes needed, {size - data:#x} left)")
        image.regions.append(Placed(start, last + 1, data))
        previous_end = last + 1
        offset = data + length
    if not image.regions:
        raise ImageError(image.path, 0, "no LiME records")


def _elf(image: Image) -> None:
    head = os.pread(image.fd, elf64.EHDR.size, 0)
    try:
        e_type, _machine, phoff, phnum = elf64.parse_header(head)
    except elf64.ElfFormatError as exc:
        raise ImageError(image.path, exc.offset, f"ELF header: {exc}") from None
    if e_type != elf64.ET_CORE:
        raise ImageError(image.path, 0x10, f"ELF type {e_type} is not a core file (ET_CORE)")
    table_end = phoff + phnum * elf64.PHDR.size
    if table_end > image.file_size:
        raise ImageError(image.path, phoff, f"program header table ({phnum} entries) runs past the end of "
                                            f"the file ({image.file_size:#x} bytes)")
    segments = elf64.read_segments(lambda offset, size: os.pread(image.fd, size, offset), phoff, phnum)
    found: list[tuple[Placed, int]] = []  # (region, offset of its program header)
    bases: set[int] = set()
    for index, seg in enumerate(segments):
        where = phoff + index * elf64.PHDR.size
        if seg.type not in (elf64.PT_LOAD, elf64.PT_NOTE) or not seg.filesz:
            continue
        if seg.offset + seg.filesz > image.file_size:
            what = "note" if seg.type == elf64.PT_NOTE else f"segment for {seg.paddr:#x}"
            raise ImageError(image.path, where, f"program header {index}: {what} data "
                                                f"({seg.offset:#x}+{seg.filesz:#x}) runs past the end of the "
                                                f"file ({image.file_size:#x} bytes)")
        if seg.type == elf64.PT_NOTE:
            image.notes += elf64.parse_notes(os.pread(image.fd, seg.filesz, seg.offset))
            continue
        if seg.memsz != seg.filesz:
            image.remarks.append(f"program header {index}: p_memsz {seg.memsz:#x} != p_filesz "
                                 f"{seg.filesz:#x}; only the file's bytes count")
        found.append((Placed(seg.paddr, seg.paddr + seg.filesz, seg.offset), where))
        if seg.vaddr:
            bases.add((seg.vaddr - seg.paddr) & 0xFFFFFFFFFFFFFFFF)
    if not found:
        raise ImageError(image.path, phoff, "no PT_LOAD segment with data")
    ordered = sorted(found, key=lambda pair: pair[0].start)
    if ordered != found:
        image.remarks.append("PT_LOAD segments are not in ascending p_paddr order")
    for (before, _), (region, where) in zip(ordered, ordered[1:]):
        if region.start < before.end:
            raise ImageError(image.path, where, f"PT_LOAD segment {region.start:#x}-{region.end:#x} overlaps "
                                                f"{before.start:#x}-{before.end:#x}")
    image.regions = [region for region, _ in ordered]
    image.direct_map_base = bases.pop() if len(bases) == 1 else None


# -- opening ------------------------------------------------------------------------------------------

def open_image(path: str, map_path: str | None = None, *, regions: Sequence[Range] | None = None,
               assume: str | None = None) -> Image:
    """Open and check ``path``. ``regions`` + ``assume`` (raw/padded) stand in for a map (verify
    passes the manifest's); ``map_path`` forces raw/padded; else the format is detected."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(f"{path}: not a regular file")
        image = Image(path, "unknown", info.st_size, [], fd)
        _detect(image, map_path, regions, assume)
        return image
    except BaseException:
        os.close(fd)
        raise


def _detect(image: Image, map_path: str | None, regions: Sequence[Range] | None, assume: str | None) -> None:
    size = image.file_size
    if assume in ("raw", "padded") and regions is not None:
        image.format, image.regions = _mapped(image.path, size, list(regions), "the manifest", assume)
        return
    if map_path is None:
        magic = os.pread(image.fd, 4, 0)
        if magic == LIME_MAGIC_BYTES:
            image.format = "lime"
            _lime(image)
            return
        if magic == elf64.ELF_MAGIC:
            image.format = "elf"
            _elf(image)
            return
        if os.path.isfile(image.path + ".map"):
            map_path = image.path + ".map"
    if map_path is not None:
        image.map_path = map_path
        image.format, image.regions = _mapped(image.path, size, read_map(map_path), map_path)
        return
    if size == 0:
        raise ImageError(image.path, 0, "empty image")
    image.format = "unknown"
    image.regions = [Placed(0, size, 0)]
    image.remarks.append("no LiME or ELF header and no map: padded (offset = address) or raw without "
                         "its map; give --map MAP for raw")


# -- reporting and verifying ------------------------------------------------------------------------

def summary(image: Image) -> list[str]:
    """What ``memdump info`` prints."""
    from memdump.sizes import format_size

    label = {"unknown": "unknown format (padded, or raw without its map)"}.get(image.format,
                                                                               f"{image.format} image")
    lines = [f"{image.path}: {label}, {len(image.regions)} regions, {image.memory_bytes} bytes of memory "
             f"({format_size(image.memory_bytes)}), file {image.file_size} bytes"
             + (f", map {image.map_path}" if image.map_path else "")]
    lines.append(f"  {'start':<18}  {'end':<18}  {'size':<12}  offset")
    for p in image.regions:
        lines.append(f"  {p.start:#018x}  {p.end:#018x}  {p.size:<#12x}  {p.offset:#x}")
    meta = image.meta()
    if image.format == "elf":
        if meta.vmcoreinfo:
            fields = dict(line.split("=", 1) for line in meta.vmcoreinfo.decode("utf-8", "replace").splitlines()
                          if "=" in line)
            lines.append(f"VMCOREINFO: {len(fields)} entries, OSRELEASE={fields.get('OSRELEASE', '?')}")
        else:
            lines.append("VMCOREINFO: none")
        if meta.direct_map_base is not None:
            lines.append(f"direct map base: {meta.direct_map_base:#x}")
    lines += [f"note: {text}" for text in image.remarks]
    return lines


def file_digests(image: Image, algorithms: Sequence[str]) -> dict[str, str]:
    import hashlib

    hashers = {name: hashlib.new(name) for name in algorithms}
    for piece in image.chunks():
        for hasher in hashers.values():
            hasher.update(piece)
    return {name: hasher.hexdigest() for name, hasher in hashers.items()}


def _bytes_only(path: str, fmt: str = "unknown") -> Image:
    """The file as bytes, no structure (for digests of an incomplete image)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from None
    size = os.fstat(fd).st_size
    return Image(path, fmt, size, [], fd)


def verify(path: str, manifest_path: str) -> list[str]:
    """Check ``path`` against its manifest: size, digests, and (for a complete image) regions.
    Returns the lines to print; raises MemdumpError naming every mismatch."""
    from memdump import manifest as manifest_mod
    from memdump.errors import MemdumpError

    record = manifest_mod.load(manifest_path)
    fmt = record.get("format")
    try:
        wanted = [Placed(int(r["start"]), int(r["end"]), int(r["offset"])) for r in record["regions"]]
        digests = {str(k).lower(): str(v).lower() for k, v in dict(record.get("digests") or {}).items()}
    except (KeyError, TypeError, ValueError):
        raise MemdumpError(f"--manifest {manifest_path}: malformed regions or digests") from None
    for name in digests:
        manifest_mod.check_hash(name)
    problems: list[str] = []
    lines: list[str] = []
    complete = bool(record.get("complete"))
    if complete and fmt in ("raw", "padded") and wanted:
        image = open_image(path, regions=[Range(p.start, p.end) for p in wanted], assume=fmt)
    elif complete and fmt in ("lime", "elf"):
        image = open_image(path)
    else:  # an incomplete (or empty) image has no structure to check: only its bytes
        image = _bytes_only(path, fmt if complete and not wanted else "unknown")
    with image:
        if image.file_size != record.get("bytes_written"):
            problems.append(f"size {image.file_size} != {record.get('bytes_written')} bytes written per the manifest")
        if complete:
            got = [(p.start, p.end, p.offset) for p in image.regions]
            if image.format != fmt:
                problems.append(f"format {image.format} != {fmt} per the manifest")
            elif got != [(p.start, p.end, p.offset) for p in wanted]:
                problems.append(f"regions differ from the manifest ({len(got)} in the image, {len(wanted)} "
                                "in the manifest)")
            else:
                lines.append(f"regions: OK ({len(got)} regions, {sum(p.size for p in wanted)} bytes of memory)")
            if not digests:
                problems.append("the manifest records no digests")
        if digests:
            for name, value in file_digests(image, list(digests)).items():
                if value == digests[name]:
                    lines.append(f"{name}: OK {value}")
                else:
                    problems.append(f"{name} {value} != {digests[name]} per the manifest")
    if not complete:
        where = record.get("stopped_at") or {}
        problems.append(f"the manifest records an incomplete image ({record.get('error') or 'no reason given'}; "
                        f"it stops at output offset {where.get('output_offset')})")
    if problems:
        raise MemdumpError(f"{path}: verify failed: " + "; ".join(problems))
    lines.append(f"{path}: verified against {manifest_path}")
    return lines
