"""Dumping a source into a structured format (padded, lime, elf).

The regions are planned before the first byte (the headers describe them), then each one is
filled completely: readable bytes as read, every page that cannot be read as zeros, recorded with
its reason. A region is never left half-written on account of the memory; only a failure of the
output itself (EPIPE, ENOSPC) stops the run, and then ``position()`` says where.
"""

from __future__ import annotations

from typing import Callable

from memdump.formats.base import FormatWriter
from memdump.iomem import Range
from memdump.sources.base import DevMemory
from memdump.walk import Hole, Reader, WalkResult

MapCallback = Callable[[int, int], None]
Remark = Callable[[int, str], None]


class StructuredWalk:
    def __init__(self, source: DevMemory, writer: FormatWriter, *, page_size: int, read_size: int,
                 on_region: MapCallback = lambda s, e: None,
                 remark: Remark = lambda level, text: None):
        self.source = source
        self.writer = writer
        self.reader = Reader(source, page_size, read_size, writer.sink)
        self.on_region = on_region
        self.remark = remark
        self.result = WalkResult()

    def _zero_fill(self, hole: Hole) -> None:
        self.writer.zeros(hole.end - hole.start)
        holes = self.result.holes
        if holes and holes[-1].end == hole.start and holes[-1].reason == hole.reason:
            holes[-1] = Hole(holes[-1].start, hole.end, hole.reason)
        else:
            holes.append(hole)
        self.remark(1, f"zero-filled {hole.start:#x}-{hole.end:#x}: {hole.reason}")

    def run(self) -> WalkResult:
        writer = self.writer
        result = self.result
        writer.begin()
        for index, region in enumerate(writer.regions):
            self.remark(2, f"region {region.start:#x}-{region.end:#x}")
            writer.begin_region(index)
            for item in self.reader.extents(region.start, region.end):
                kind = item[0]
                if kind == "data":
                    writer.data(item[2])
                elif kind == "sent":
                    writer.sent(item[2])
                elif kind == "hole":
                    self._zero_fill(item[1])
                else:
                    address = item[1]
                    self.remark(1, f"{self.source.name} ended early at {address:#x}")
                    self._zero_fill(Hole(address, region.end, "eof"))
            writer.end_region(index)
            result.regions.append(Range(region.start, region.end))
            self.on_region(region.start, region.end)
        writer.finish()
        result.bytes_written = writer.sink.written
        result.stopped = "end of regions"
        return result
