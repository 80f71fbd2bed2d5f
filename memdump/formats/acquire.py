"""Dumping a source into a structured format (padded, lime, elf).

The regions are planned before the first byte (the headers describe them), then each one is
filled completely: readable bytes as read, every page that cannot be read as zeros, recorded with
its reason. A region is never left half-written on account of the memory; only a failure of the
output itself (EPIPE, ENOSPC) stops the run, and then ``position()`` says where.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from memdump.errors import MemdumpError, OutputError
from memdump.formats.base import FormatWriter, Placed
from memdump.iomem import Range
from memdump.progress import Progress
from memdump.sink import Sink
from memdump.sources.base import DevMemory
from memdump.walk import Hole, Reader, WalkResult

if TYPE_CHECKING:
    from memdump.manifest import Manifest, Records

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


def failure_text(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, MemdumpError) else f"{type(exc).__name__}: {text}"


class Acquisition:
    """Runs a walk (raw or structured) with its records: progress while it runs, then the manifest
    and the digest sidecars -- or, when the output fails, a manifest that says the image is
    incomplete and where it stops (and no sidecars: a digest of a broken stream proves nothing)."""

    def __init__(self, walk, sink: Sink, *, records: "Records", manifest: "Manifest | None",
                 writer: FormatWriter | None = None, progress_total: int = 0, progress: bool = False,
                 limited: bool = False, remark: Remark = lambda level, text: None):
        self.walk = walk
        self.sink = sink
        self.records = records
        self.manifest = manifest
        self.writer = writer
        self.progress_total = progress_total
        self.progress = progress
        self.limited = limited
        self.remark = remark

    def _regions(self, result: WalkResult | None) -> list[Placed]:
        if self.writer is not None:
            return self.writer.placed
        placed, offset = [], 0
        for r in (result.regions if result else []):
            placed.append(Placed(r.start, r.end, offset))
            offset += r.end - r.start
        return placed

    def _account(self, result: WalkResult | None) -> None:
        if self.manifest is None:
            return
        self.manifest.set_regions(self._regions(result))
        self.manifest.set_unread(result.holes if result else [], zero_filled=self.writer is not None)

    def run(self) -> WalkResult:
        ticker = Progress(self.progress_total, lambda: self.sink.written) if self.progress else None
        try:
            if ticker:
                ticker.start()
            try:
                result = self.walk.run()
                self.sink.close()
            finally:
                if ticker:
                    ticker.stop()
        except BaseException as exc:
            self._failed(exc)
            raise
        if self.writer is not None and self.limited:
            result.stopped = "size limit (-s)"
        digests = self.sink.digests()
        if self.manifest is not None:
            self._account(result)
            self.manifest.finish(bytes_written=self.sink.written, digests=digests, stopped=result.stopped)
            self.records.write_manifest(self.manifest)
        sidecars = self.records.sidecars()
        self.records.write_sidecars(digests)
        if digests and self.manifest is None and not sidecars:
            for algorithm, digest in digests.items():
                self.remark(0, f"{algorithm} {digest} ({self.sink.name})")
        return result

    def _failed(self, exc: BaseException) -> None:
        self.records.discard(keep_manifest=True)
        if self.manifest is None:
            return
        result = getattr(self.walk, "result", None)
        if self.writer is not None:
            address = self.writer.position()
        else:
            address = result.regions[-1].end if result and result.regions else None
        self._account(result)
        self.manifest.finish(bytes_written=self.sink.written, digests={}, stopped="output failed"
                             if isinstance(exc, OutputError) else "interrupted" if isinstance(exc, KeyboardInterrupt)
                             else "error", error=failure_text(exc), address=address)
        try:
            self.records.write_manifest(self.manifest)
        except MemdumpError as second:
            self.remark(0, f"manifest not written: {second}")
