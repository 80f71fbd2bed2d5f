"""Reading images back: detect the format, list the regions, check the structure.

Detection: each format's own detector on the file's first bytes (LiME and ELF by their magic);
raw or padded when a map is given (``--map``) or ``IMAGE.map`` exists (raw when the file is as
long as the map's regions together, padded when it ends where the last region ends); anything
else is "unknown" (padded, or raw without its map), one region from address 0. Every defect a
damaged file can have (truncated header, bad magic, a record running past the end, overlapping
records) is an ImageError naming the offset.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Sequence, Tuple

from memdump import elf64
from memdump.errors import ImageError, UsageError
from memdump.facts import MachineFacts
from memdump.formats import WRITERS, format_class
from memdump.formats.base import Placed
from memdump.iomem import Range
from memdump.maps import read_map

CHUNK = 4 << 20
UNKNOWN = "unknown"


@dataclass
class Image:
    """An opened image: its format, its regions (where each sits in the file) and its notes."""

    path: str
    format: str
    file_size: int
    regions: List[Placed]
    fd: int = -1
    notes: List[elf64.Note] = field(default_factory=list)
    map_path: Optional[str] = None
    remarks: List[str] = field(default_factory=list)
    direct_map_base: Optional[int] = None  # ELF: p_vaddr - p_paddr, when every segment agrees

    @property
    def memory_bytes(self) -> int:
        return sum(p.size for p in self.regions)

    def facts(self) -> MachineFacts:
        """What the image records beyond its bytes (kept when converting ELF to ELF)."""
        vmcoreinfo = next((n.desc for n in self.notes if n.name == b"VMCOREINFO"), None)
        return MachineFacts(vmcoreinfo, self.direct_map_base)

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

    def chunks(self, start: int = 0, end: Optional[int] = None, size: int = CHUNK) -> Iterator[bytes]:
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
        facts = self.facts()
        return {
            "path": self.path,
            "format": self.format,
            "file_size": self.file_size,
            "memory_bytes": self.memory_bytes,
            "map": self.map_path,
            "regions": [{"start": p.start, "end": p.end, "size": p.size, "offset": p.offset}
                        for p in self.regions],
            "vmcoreinfo": facts.vmcoreinfo.decode("utf-8", "replace") if facts.vmcoreinfo else None,
            "direct_map_base": f"{facts.direct_map_base:#x}" if facts.direct_map_base is not None else None,
            "remarks": list(self.remarks),
        }


def _mapped(path: str, size: int, ranges: List[Range], map_path: str,
            fmt: Optional[str] = None) -> Tuple[str, List[Placed]]:
    """A raw or padded image's format (from its size, unless given) and its regions."""
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
    return fmt, format_class(fmt).place(ranges)


def open_bytes(path: str) -> Image:
    """``path`` opened read-only, as bytes with no structure yet; UsageError unless it is a
    regular file."""
    from memdump.manifest import open_regular  # opened O_NONBLOCK: a FIFO never blocks it

    fd = open_regular(path, "")
    return Image(path, UNKNOWN, os.fstat(fd).st_size, [], fd)


def open_image(path: str, map_path: Optional[str] = None, *, regions: Optional[Sequence[Range]] = None,
               assume: Optional[str] = None) -> Image:
    """Open and check ``path``. ``regions`` + ``assume`` (raw/padded) stand in for a map (verify
    passes the manifest's); ``map_path`` forces raw/padded; else the format is detected."""
    image = open_bytes(path)
    try:
        _detect(image, map_path, regions, assume)
        return image
    except BaseException:
        image.close()
        raise


def _detect(image: Image, map_path: Optional[str], regions: Optional[Sequence[Range]],
            assume: Optional[str]) -> None:
    size = image.file_size
    if assume in ("raw", "padded") and regions is not None:
        image.format, image.regions = _mapped(image.path, size, list(regions), "the manifest", assume)
        return
    if map_path is None:
        head = os.pread(image.fd, 64, 0)
        for cls in WRITERS.values():
            if cls.detect(head):
                found = cls.read(image.fd, image.path, size)
                image.format = cls.name
                image.regions, image.notes = found.regions, found.notes
                image.direct_map_base, image.remarks = found.direct_map_base, found.remarks
                return
        if os.path.isfile(image.path + ".map"):
            map_path = image.path + ".map"
    if map_path is not None:
        image.map_path = map_path
        image.format, image.regions = _mapped(image.path, size, read_map(map_path), map_path)
        return
    if size == 0:
        raise ImageError(image.path, 0, "empty image")
    image.format = UNKNOWN
    image.regions = [Placed(0, size, 0)]
    image.remarks.append("no LiME or ELF header and no map: padded (offset = address) or raw without "
                         "its map; give --map MAP for raw")
