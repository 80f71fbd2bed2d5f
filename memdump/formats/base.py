"""What every image format shares: the regions planned before the first byte, where each one
lands in the output, the bookkeeping that keeps a record from being left half-written, and what
a reader of the format gives back.

A writer is driven in one order: ``begin()``, then per region ``begin_region(i)``, exactly
``region.size`` bytes through ``data``/``sent``/``hole`` (structured formats; raw may stop early
at a ``-s`` cap), ``end_region(i)``, and ``finish()``. Structured formats write their headers
from the plan, so headers are known before any data. A format's class is also its detector
(``detect``) and its reader (``read``), which ``memdump.image`` uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, List, Optional, Sequence

from memdump import elf64
from memdump.errors import UsageError
from memdump.facts import NO_FACTS, MachineFacts
from memdump.iomem import Range
from memdump.remarks import RegionCallback, no_region
from memdump.sink import Sink
from memdump.sources.base import Hole


@dataclass(frozen=True)
class Placed:
    """A region ``[start, end)`` of memory whose bytes sit at ``offset`` in the image."""

    start: int
    end: int
    offset: int

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass
class Layout:
    """What a format's reader finds in a file: its regions, and for ELF its notes and the direct
    map's base; ``remarks`` are oddities that are not damage."""

    regions: List[Placed] = field(default_factory=list)
    notes: List[elf64.Note] = field(default_factory=list)
    direct_map_base: Optional[int] = None
    remarks: List[str] = field(default_factory=list)


def check_regions(regions: Sequence[Range]) -> List[Range]:
    """Regions must be non-empty, ascending and non-overlapping: every format relies on it."""
    checked: List[Range] = []
    for r in regions:
        r = Range(int(r[0]), int(r[1]))
        if r.end <= r.start:
            raise UsageError(f"empty region {r}")
        if checked and r.start < checked[-1].end:
            raise UsageError(f"region {r} overlaps or precedes {checked[-1]}")
        checked.append(r)
    return checked


def plan_regions(ranges: Sequence[Range], limit: int = 0) -> List[Range]:
    """The source's ranges, capped by ``-s`` counting memory bytes covered (0: no cap)."""
    planned: List[Range] = []
    left = limit
    for r in ranges:
        if limit and left <= 0:
            break
        end = r.end if not limit else min(r.end, r.start + left)
        planned.append(Range(r.start, end))
        left -= end - r.start
    return planned


def back_to_back(regions: Sequence[Range], offset: int = 0) -> List[Placed]:
    """Regions whose bytes follow each other in the file from ``offset``."""
    placed = []
    for r in regions:
        placed.append(Placed(r.start, r.end, offset))
        offset += r.end - r.start
    return placed


class FormatWriter:
    """Base of every format: byte accounting per region and the common write paths."""

    name: ClassVar[str]
    #: structured formats keep each region whole: unreadable pages become zeros
    structured: ClassVar[bool] = True
    #: the format needs a map beside the file to be read back (raw, padded)
    mapped: ClassVar[bool] = False

    def __init__(self, sink: Sink, regions: Sequence[Range], facts: MachineFacts = NO_FACTS,
                 on_region: RegionCallback = no_region):
        self.sink = sink
        self.regions = check_regions(regions)
        self.facts = facts
        self.on_region = on_region
        self.current: Optional[int] = None
        self.filled = 0
        self.reached: Optional[int] = None  # the end of the last region closed
        self.placed = self.layout()

    # -- reading back -------------------------------------------------------------------------------

    @classmethod
    def detect(cls, head: bytes) -> bool:
        """Whether a file starting with ``head`` is in this format (formats without a header:
        never)."""
        return False

    @classmethod
    def read(cls, fd: int, path: str, size: int) -> Layout:
        """The regions of a file in this format (ImageError naming the offset of any damage)."""
        raise NotImplementedError(f"{cls.name} images are read through their map")

    @classmethod
    def place(cls, ranges: Sequence[Range]) -> List[Placed]:
        """Where a mapped format keeps each of ``ranges`` in the file."""
        raise NotImplementedError(f"{cls.name} images are not read through a map")

    # -- the plan ---------------------------------------------------------------------------------

    def layout(self) -> List[Placed]:
        """Where each region's first byte lands in the output."""
        raise NotImplementedError

    def total_size(self) -> int:
        """The image's length once finished."""
        last = self.placed[-1] if self.placed else None
        return last.offset + last.size if last else self.header_size()

    def header_size(self) -> int:
        return 0

    def output_regions(self) -> List[Placed]:
        """The regions the output holds, where they sit (the manifest's ``regions``)."""
        return self.placed

    # -- writing ----------------------------------------------------------------------------------

    def begin(self) -> None:
        """Anything before the first region (headers)."""

    def begin_region(self, index: int) -> None:
        if self.current is not None:
            raise RuntimeError(f"region {self.current} still open")
        self.current = index
        self.filled = 0

    def data(self, view) -> None:
        # counted from the sink, so a write cut short (a signal, a full disk) still counts
        # exactly what reached the output
        sink = self.sink
        before = sink.written
        try:
            sink.write(view)
        finally:
            self.filled += sink.written - before

    def sent(self, count: int) -> None:
        """``count`` bytes the sink already moved by zero-copy."""
        self.filled += count

    def zeros(self, count: int) -> None:
        """``count`` zero bytes standing for memory that could not be read."""
        sink = self.sink
        before = sink.written
        try:
            sink.write_zeros(count)
        finally:
            self.filled += sink.written - before

    def hole(self, hole: Hole) -> None:
        """Memory the source could not give: a structured format keeps its place with zeros."""
        self.zeros(hole.end - hole.start)

    def end_region(self, index: int) -> None:
        region = self.regions[index]
        if self.current != index or self.filled != region.size:
            raise RuntimeError(f"region {region} closed after {self.filled} of {region.size} bytes")
        self.current = None
        self.reached = region.end
        self.on_region(region.start, region.end)

    def close_open(self) -> None:
        """After a failure: report a region that is open in the output (raw keeps partial ones)."""

    def finish(self) -> None:
        """Anything after the last region."""

    # -- where a failed output stops ----------------------------------------------------------------

    def position(self) -> Optional[int]:
        """The memory address the output had reached (None before the first region)."""
        if self.current is None:
            return self.reached
        return self.regions[self.current].start + self.filled
