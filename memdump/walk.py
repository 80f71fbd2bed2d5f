"""Walking a source: from ranges (or a blind scan) to bytes in a writer.

Two walks:

* ``RegionWalk`` -- the default, for every format. Reads only the regions planned from the ranges
  the source serves (published System RAM), in large reads into a page-aligned buffer; where a
  read fails it retries page by page, so one bad page costs one page and holes land on page
  boundaries. Zero-copy where the source and the sink allow. What a hole becomes is the writer's
  business: raw leaves it out (and closes a map region), structured formats zero-fill it.
* ``ScanWalk`` -- ``--scan``: the original memdump's blind walk from address 0, bounded by the end
  of the address space: read ``-b`` bytes, on an error close the map region and step ``-p``
  forward, stop at EOF or after ``-s`` bytes. It writes the raw stream.

The reader speaks in typed events: ``Data`` (bytes in its buffer), ``Sent`` (bytes the sink moved
by zero-copy), ``Hole`` (a span that failed) and ``End`` (the source ended early).
"""

from __future__ import annotations

import errno
import mmap
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator, List, Optional, Tuple, Union

from memdump.errors import HoleError
from memdump.iomem import Range
from memdump.remarks import Remark, RegionCallback, no_remark, no_region
from memdump.sink import Sink
from memdump.sources.base import DevMemory, Hole

if TYPE_CHECKING:
    from memdump.formats.base import FormatWriter

DEFAULT_READ_SIZE = 1 << 20  # large reads amortise system calls; page fallback keeps holes exact
BATCH = 1 << 20  # smaller reads are gathered up to this much per write
# Seconds between checkpoints (the manifest rewritten with how far the dump got). The walk looks
# at a monotonic clock once per event (one read or write of up to 1 MiB), never per page.
CHECKPOINT_INTERVAL = 2.0

Checkpoint = Optional[Callable[[], None]]


@dataclass(frozen=True)
class Data:
    """``view`` holds the bytes at ``address``: consume them before asking for the next event."""

    address: int
    view: memoryview


@dataclass(frozen=True)
class Sent:
    """``count`` bytes at ``address`` are already in the sink (zero-copy)."""

    address: int
    count: int


@dataclass(frozen=True)
class End:
    """The source ended (EOF) at ``address``, before the span asked for; nothing follows."""

    address: int


Event = Union[Data, Sent, Hole, End]


@dataclass
class WalkResult:
    regions: List[Range] = field(default_factory=list)
    holes: List[Hole] = field(default_factory=list)
    bytes_written: int = 0
    stopped: str = "end of ranges"


def aligned_buffer(size: int) -> mmap.mmap:
    """A page-aligned buffer: kernel copies into a buffer 16 bytes into a page run 4-5x slower."""
    return mmap.mmap(-1, max(size, 1))


def errno_name(err: int) -> str:
    return errno.errorcode.get(err, str(err))


class Reader:
    """Reads address spans from a source, in large reads with a page-granular fallback.

    Reads smaller than ``BATCH`` (an explicit small ``-b``) are still made one by one, each of
    the size asked for, but land side by side in the buffer, so the sink gets one write per
    buffer instead of one per read.
    """

    def __init__(self, source: DevMemory, page_size: int, read_size: int, sink: Optional[Sink] = None):
        self.source = source
        self.page_size = page_size
        self.read_size = read_size
        self.capacity = max(read_size, BATCH)
        self.buffer = aligned_buffer(self.capacity)
        self.view = memoryview(self.buffer)
        self.sink = sink

    def read_into(self, address: int, offset: int, size: int) -> Tuple[int, int]:
        """(count, 0) or (0, errno): one read of ``size`` bytes at ``address`` into the buffer at
        ``offset``, EINTR retried. (0, 0) is the end of the source."""
        view = self.view[offset:offset + size]
        while True:
            try:
                return self.source.readinto(address, view), 0
            except InterruptedError:
                continue
            except HoleError as exc:
                return 0, exc.errno or errno.EIO

    def _zero_copy(self, address: int, size: int) -> Optional[int]:
        sink = self.sink
        if sink is None or not sink.zero_copy:
            return None
        where = self.source.zero_copy(address)
        if where is None:
            return None
        return sink.sendfile(where[0], where[1], size)

    def extents(self, start: int, end: int, budget: Optional[int] = None) -> Iterator[Event]:
        """Cover ``[start, end)`` in address order with contiguous events (see the module's
        docstring). ``budget`` caps the bytes yielded as Data/Sent (the original's ``-s``)."""
        address = start
        left = budget
        read_size = self.read_size
        capacity = self.capacity
        while address < end and (left is None or left > 0):
            want = min(read_size, end - address)
            if left is not None:
                want = min(want, left)
            sent = self._zero_copy(address, want)
            if sent:
                yield Sent(address, sent)
                address += sent
                left = None if left is None else left - sent
                continue
            # Reads of ``want`` bytes, side by side in the buffer until it is full.
            first = address
            filled = 0
            err = 0
            ended = False
            while True:
                count, err = self.read_into(address, filled, want)
                if not count:
                    ended = not err
                    break
                filled += count
                address += count
                left = None if left is None else left - count
                if filled + read_size > capacity or address >= end or left == 0:
                    break
                want = min(read_size, end - address)
                if left is not None:
                    want = min(want, left)
            if filled:
                yield Data(first, self.view[:filled])
            if ended:
                yield End(address)
                return
            if not err:
                continue
            # The read failed: retry its window page by page so only bad pages are lost.
            window_end = address + want
            while address < window_end and (left is None or left > 0):
                step_end = min(address - address % self.page_size + self.page_size, window_end)
                if left is not None:
                    step_end = min(step_end, address + left)
                count, err = self.read_into(address, 0, step_end - address)
                if count:
                    yield Data(address, self.view[:count])
                    address += count
                    left = None if left is None else left - count
                elif err:
                    yield Hole(address, step_end, errno_name(err))
                    address = step_end
                else:
                    yield End(address)
                    return


class RegionWalk:
    """Drives a writer over the regions it was planned with (see ``FormatWriter``).

    ``budget`` (raw only) caps the bytes written, as the original's ``-s`` does: the walk stops
    where that many bytes are out, whatever the holes. Structured formats are planned with the
    cap already applied to the memory they cover, since their headers describe whole regions.
    """

    def __init__(self, source: DevMemory, writer: "FormatWriter", *, page_size: int, read_size: int,
                 budget: int = 0, remark: Remark = no_remark, checkpoint: Checkpoint = None):
        self.source = source
        self.writer = writer
        self.reader = Reader(source, page_size, read_size, writer.sink)
        self.budget = budget
        self.remark = remark
        # called between regions and at least every CHECKPOINT_INTERVAL seconds
        self.checkpoint = checkpoint
        # kept on the walk, so a caller can account for what was done when the output fails
        self.result = WalkResult()

    def _record(self, hole: Hole) -> None:
        holes = self.result.holes
        if self.writer.structured:
            self.remark(1, f"zero-filled {hole.start:#x}-{hole.end:#x}: {hole.reason}")
            if holes and holes[-1].end == hole.start and holes[-1].reason == hole.reason:
                holes[-1] = Hole(holes[-1].start, hole.end, hole.reason)
                return
        elif hole.reason != "eof":
            self.remark(1, f"hole at {hole.start:#x}-{hole.end:#x}: {hole.reason}")
        holes.append(hole)

    def run(self) -> WalkResult:
        writer, result, sink = self.writer, self.result, self.writer.sink
        structured = writer.structured
        word = "region" if structured else "range"
        stopped = "end of regions" if structured else "end of ranges"
        tick = self.checkpoint
        clock = time.monotonic
        due = clock() + CHECKPOINT_INTERVAL
        last = len(writer.regions) - 1
        writer.begin()
        try:
            for index, region in enumerate(writer.regions):
                left = self.budget - sink.written if self.budget else None
                if left is not None and left <= 0:
                    stopped = "size limit (-s)"
                    break
                self.remark(2, f"{word} {region.start:#x}-{region.end:#x}")
                writer.begin_region(index)
                for event in self.reader.extents(region.start, region.end, left):
                    if type(event) is Data:
                        writer.data(event.view)
                    elif type(event) is Sent:
                        writer.sent(event.count)
                    elif type(event) is Hole:
                        writer.hole(event)
                        self._record(event)
                    else:
                        self.remark(1, f"{self.source.name} ended early at {event.address:#x}")
                        rest = Hole(event.address, region.end, "eof")
                        writer.hole(rest)
                        self._record(rest)
                    if tick is not None and clock() >= due:
                        tick()
                        due = clock() + CHECKPOINT_INTERVAL
                writer.end_region(index)
                if tick is not None and index < last:
                    tick()
                    due = clock() + CHECKPOINT_INTERVAL
        finally:
            # a failed output still maps what it holds
            writer.close_open()
        if self.budget and sink.written >= self.budget:
            stopped = "size limit (-s)"
        writer.finish()
        result.regions = [Range(p.start, p.end) for p in writer.output_regions()]
        result.bytes_written = sink.written
        result.stopped = stopped
        return result


class _Regions:
    """Tracks the scan's current dumped region and reports each one as it closes."""

    def __init__(self, on_region: RegionCallback, result: WalkResult):
        self.on_region = on_region
        self.result = result
        self.start: Optional[int] = None
        self.end = 0

    def extend(self, address: int, count: int) -> None:
        if self.start is not None and address != self.end:
            self.close()
        if self.start is None:
            self.start = address
        self.end = address + count

    def close(self) -> None:
        if self.start is not None:
            self.result.regions.append(Range(self.start, self.end))
            self.on_region(self.start, self.end)
            self.start = None


class ScanWalk:
    """The original program's loop, address for address (see the module docstring)."""

    def __init__(self, source: DevMemory, sink: Sink, *, page_size: int, read_size: int,
                 exact_reads: bool, limit: int = 0, on_region: RegionCallback = no_region,
                 remark: Remark = no_remark, checkpoint: Checkpoint = None):
        self.source = source
        self.sink = sink
        self.page_size = page_size
        self.read_size = read_size
        # With the default -b (one page) the same bytes come out of larger reads, retried read by
        # read only where they fail; an explicit -b is honoured read for read.
        self.window = read_size if exact_reads else max(read_size, DEFAULT_READ_SIZE)
        self.reader = Reader(source, page_size, self.window)
        self.limit = limit
        self.on_region = on_region
        self.remark = remark
        self.checkpoint = checkpoint  # called at least every CHECKPOINT_INTERVAL seconds
        # kept on the walk, so a caller can account for what was done when the output fails
        self.result = WalkResult()
        self._regions: Optional[_Regions] = None

    def position(self) -> Optional[int]:
        """The memory address the output has reached (None before the first byte)."""
        regions = self._regions
        if regions is not None and regions.start is not None:
            return regions.end
        return self.result.regions[-1].end if self.result.regions else None

    def run(self) -> WalkResult:
        result = self.result
        tick = self.checkpoint
        clock = time.monotonic
        due = clock() + CHECKPOINT_INTERVAL
        regions = self._regions = _Regions(self.on_region, result)
        end = self.source.scan_end()
        reader = self.reader
        read_into = reader.read_into
        view = reader.view
        capacity = reader.capacity
        sink = self.sink
        where = 0
        count = 0
        # Reads that succeed land side by side in the buffer (each still exactly the read the
        # loop asks for) and go out in one write when the buffer is full or before anything else
        # happens (a hole, the end): small -b reads cost one system call each, not two. The map
        # follows what has been written.
        batch_at = 0
        pending = 0

        def flush() -> None:
            nonlocal pending
            if pending:
                sink.write(view[:pending])
                regions.extend(batch_at, pending)
                pending = 0

        def read(address: int, size: int) -> Tuple[int, int]:
            nonlocal pending, batch_at
            if pending + size > capacity:
                flush()
            got, err = read_into(address, pending, size)
            if got:
                if not pending:
                    batch_at = address
                pending += got
            return got, err

        def hole_at(address: int, err: int) -> None:
            flush()
            regions.close()
            result.holes.append(Hole(address, address + self.page_size, errno_name(err)))

        try:
            while not self.limit or count < self.limit:
                if tick is not None and clock() >= due:
                    tick()
                    due = clock() + CHECKPOINT_INTERVAL
                if where >= end:
                    result.stopped = "end of address space"
                    self.remark(1, f"Stopped at the end of the address space at {where:#x}")
                    break
                todo = min(self.window, end - where)
                if self.limit:
                    todo = min(todo, self.limit - count)
                got, err = read(where, todo)
                if got:
                    count += got
                    where += got
                    continue
                if not err:
                    result.stopped = "end of file"
                    self.remark(1, f"Stopped on EOF at {where:#x}")
                    break
                if self.window == self.read_size:
                    hole_at(where, err)
                    where += self.page_size
                    continue
                # replay the window as the original's sequence of -b sized reads
                window_end = where + todo
                while where < window_end and (not self.limit or count < self.limit):
                    step = min(self.read_size, window_end - where)
                    got, err = read(where, step)
                    if got:
                        count += got
                        where += got
                    elif err:
                        hole_at(where, err)
                        where += self.page_size
                    else:
                        break
                if not got and not err:
                    result.stopped = "end of file"
                    self.remark(1, f"Stopped on EOF at {where:#x}")
                    break
            else:
                result.stopped = "size limit (-s)"
            flush()
        finally:
            regions.close()
            result.bytes_written = count - pending
        if self.limit and count < self.limit:
            self.remark(0, f"warning: found only {count:#x} of {self.limit:#x} bytes")
        return result
