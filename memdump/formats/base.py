"""What every image writer shares: the regions planned before the first byte, where each one
lands in the output, and the bookkeeping that keeps a record from being left half-written.

A writer is driven in one order: ``begin()``, then per region ``begin_region(i)``, exactly
``region.size`` bytes through ``data``/``sent``/``zeros``, ``end_region(i)``, and ``finish()``.
Structured formats write their headers from the plan, so headers are known before any data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

from memdump.errors import UsageError
from memdump.iomem import Range
from memdump.sink import Sink



@dataclass(frozen=True)
class Placed:
    """A region ``[start, end)`` of memory whose bytes sit at ``offset`` in the image."""

    start: int
    end: int
    offset: int

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class ImageMeta:
    """What a format may record beyond the bytes: the kernel's VMCOREINFO note text and the
    direct map's base (``vaddr - paddr``), each when known."""

    vmcoreinfo: bytes | None = None
    direct_map_base: int | None = None


def check_regions(regions: Sequence[Range]) -> list[Range]:
    """Regions must be non-empty, ascending and non-overlapping: every format relies on it."""
    checked: list[Range] = []
    for r in regions:
        r = Range(int(r[0]), int(r[1]))
        if r.end <= r.start:
            raise UsageError(f"empty region {r}")
        if checked and r.start < checked[-1].end:
            raise UsageError(f"region {r} overlaps or precedes {checked[-1]}")
        checked.append(r)
    return checked


def plan_regions(ranges: Sequence[Range], limit: int = 0) -> list[Range]:
    """The source's ranges, capped by ``-s`` counting memory bytes covered (0: no cap)."""
    planned: list[Range] = []
    left = limit
    for r in ranges:
        if limit and left <= 0:
            break
        end = r.end if not limit else min(r.end, r.start + left)
        planned.append(Range(r.start, end))
        left -= end - r.start
    return planned


class FormatWriter:
    """Base of every format: byte accounting per region and the common write paths."""

    name: ClassVar[str]
    #: structured formats keep each region whole: unreadable pages become zeros
    structured: ClassVar[bool] = True

    def __init__(self, sink: Sink, regions: Sequence[Range], meta: ImageMeta = ImageMeta()):
        self.sink = sink
        self.regions = check_regions(regions)
        self.meta = meta
        self.current: int | None = None
        self.filled = 0
        self.placed = self.layout()

    # -- the plan ---------------------------------------------------------------------------------

    def layout(self) -> list[Placed]:
        """Where each region's first byte lands in the output."""
        raise NotImplementedError

    def total_size(self) -> int:
        """The image's length once finished."""
        last = self.placed[-1] if self.placed else None
        return last.offset + last.size if last else self.header_size()

    def header_size(self) -> int:
        return 0

    # -- writing ----------------------------------------------------------------------------------

    def begin(self) -> None:
        """Anything before the first region (headers)."""

    def begin_region(self, index: int) -> None:
        if self.current is not None:
            raise RuntimeError(f"region {self.current} still open")
        self.current = index
        self.filled = 0

    def data(self, view) -> None:
        self.sink.write(view)
        self.filled += len(view)

    def sent(self, count: int) -> None:
        """``count`` bytes the sink already moved by zero-copy."""
        self.filled += count

    def zeros(self, count: int) -> None:
        """``count`` zero bytes standing for memory that could not be read."""
        self.sink.write_zeros(count)
        self.filled += count

    def end_region(self, index: int) -> None:
        region = self.regions[index]
        if self.current != index or self.filled != region.size:
            raise RuntimeError(f"region {region} closed after {self.filled} of {region.size} bytes")
        self.current = None

    def finish(self) -> None:
        """Anything after the last region."""

    # -- where a failed output stops ----------------------------------------------------------------

    def position(self) -> int | None:
        """The memory address the output had reached (None before the first region)."""
        if self.current is None:
            return None
        return self.regions[self.current].start + self.filled
