"""The ``-m`` map: one ``0x<start> 0x<end>`` line per region (lower-case hex, end exclusive),
the original memdump's format. Written as each region closes; read back for raw and padded
images, whose files carry no addresses of their own."""

from __future__ import annotations

import re
import sys
from typing import List, Optional, Sequence

from memdump.errors import ImageError, OutputError, UsageError
from memdump.iomem import Range

_LINE = re.compile(r"^0x([0-9a-fA-F]+) 0x([0-9a-fA-F]+)$")


def map_line(start: int, end: int) -> str:
    """One region, as the original writes it."""
    return f"0x{start:x} 0x{end:x}\n"


def map_text(regions: Sequence[Range]) -> str:
    return "".join(map_line(r.start, r.end) for r in regions)


def read_map(path: str) -> List[Range]:
    """A map file: ascending, non-overlapping regions; ImageError naming the line of any defect."""
    from memdump.manifest import open_regular  # a FIFO or a device never blocks the read

    fd = open_regular(path, "--map ")
    try:
        with open(fd, "rb") as handle:
            blob = handle.read()
    except OSError as exc:
        raise UsageError(f"--map {path}: {exc.strerror}") from None
    ranges: List[Range] = []
    offset = 0
    for number, raw in enumerate(blob.split(b"\n"), 1):
        line = raw.decode("ascii", "replace").strip()
        here, offset = offset, offset + len(raw) + 1
        if not line:
            continue
        match = _LINE.match(line)
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


class MapFile:
    """``-m FILE`` or ``-m -`` (stderr), written as each region closes (a RegionCallback). The
    file is created when this is made, before the first byte is dumped, so a bad path costs
    nothing; like every output it never overwrites an existing file."""

    def __init__(self, target: Optional[str]):
        self.target = target
        self.stream = None
        if target is None:
            return
        if target == "-":
            self.stream = sys.stderr
            return
        from memdump.sink import open_output  # created as every output is: O_EXCL, no link, 0600

        self.stream = open(open_output(target, "-m"), "w")

    def __call__(self, start: int, end: int) -> None:
        if self.stream is None:
            return
        try:
            self.stream.write(map_line(start, end))
            self.stream.flush()
        except OSError as exc:
            raise OutputError(f"map file write error: {exc.strerror}") from None

    def close(self) -> None:
        if self.stream is not None and self.stream is not sys.stderr:
            try:
                self.stream.close()
            except OSError as exc:
                raise OutputError(f"map file write error: {exc.strerror}") from None
