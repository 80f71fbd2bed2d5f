"""Walking a source: from ranges (or a blind scan) to bytes in a sink.

Two walks:

* ``RamWalk`` -- the default. Reads only the ranges the source serves (published System RAM),
  in large reads into a page-aligned buffer; where a read fails it retries page by page, so one
  bad page costs one page and holes land on page boundaries. Zero-copy where the source allows.
* ``ScanWalk`` -- ``--scan``: the original memdump's blind walk from address 0, bounded by the end
  of the address space: read ``-b`` bytes, on an error close the map region and step ``-p``
  forward, stop at EOF or after ``-s`` bytes.

Both write the raw format (readable bytes concatenated, holes left out) and report each dumped
region to a map callback as it closes, as the original does.
"""

from __future__ import annotations

import errno
import mmap
from dataclasses import dataclass, field
from typing import Callable, Iterator

from memdump.errors import HoleError
from memdump.iomem import Range
from memdump.sink import Sink
from memdump.sources.base import DevMemory, Hole

DEFAULT_READ_SIZE = 1 << 20  # large reads amortise system calls; page fallback keeps holes exact
BATCH = 1 << 20  # smaller reads are gathered up to this much per write


@dataclass
class WalkResult:
    regions: list[Range] = field(default_factory=list)
    holes: list[Hole] = field(default_factory=list)
    bytes_written: int = 0
    stopped: str = "end of ranges"


def aligned_buffer(size: int) -> mmap.mmap:
    """A page-aligned buffer: kernel copies into a buffer 16 bytes into a page run 4-5x slower."""
    return mmap.mmap(-1, max(size, 1))


class Reader:
    """Reads address spans from a source, in large reads with a page-granular fallback.

    Reads smaller than ``BATCH`` (an explicit small ``-b``) are still made one by one, each of
    the size asked for, but land side by side in the buffer, so the sink gets one write per
    buffer instead of one per read.
    """

    def __init__(self, source: DevMemory, page_size: int, read_size: int, sink: Sink | None = None):
        self.source = source
        self.page_size = page_size
        self.read_size = read_size
        self.capacity = max(read_size, BATCH)
        self.buffer = aligned_buffer(self.capacity)
        self.view = memoryview(self.buffer)
        self.sink = sink

    def _read(self, address: int, size: int) -> tuple[int, int]:
        """(count, 0) or (0, errno): one read into the start of the buffer, EINTR retried."""
        return self._read_into(address, 0, size)

    def _read_into(self, address: int, offset: int, size: int) -> tuple[int, int]:
        """(count, 0) or (0, errno): one read into the buffer at ``offset``, EINTR retried."""
        view = self.view[offset:offset + size]
        while True:
            try:
                return self.source.readinto(address, view), 0
            except InterruptedError:
                continue
            except HoleError as exc:
                return 0, exc.errno or errno.EIO

    def _zero_copy(self, address: int, size: int) -> int | None:
        sink = self.sink
        if sink is None or not sink.zero_copy:
            return None
        where = self.source.zero_copy(address)
        if where is None:
            return None
        return sink.sendfile(where[0], where[1], size)

    def extents(self, start: int, end: int, budget: int | None = None) -> Iterator[tuple]:
        """Cover ``[start, end)`` in address order, yielding

        * ``("data", address, view)`` -- bytes read into the reusable buffer (consume before
          asking for the next item);
        * ``("sent", address, count)`` -- bytes already moved to the sink by zero-copy;
        * ``("hole", Hole)`` -- a page-aligned span that failed;
        * ``("eof", address)`` -- the source ended early; nothing follows.

        ``budget`` caps the bytes yielded as data/sent (the original's ``-s``).
        """
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
                yield ("sent", address, sent)
                address += sent
                left = None if left is None else left - sent
                continue
            # Reads of ``want`` bytes, side by side in the buffer until it is full.
            first = address
            filled = 0
            err = 0
            ended = False
            while True:
                count, err = self._read_into(address, filled, want)
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
                yield ("data", first, self.view[:filled])
            if ended:
                yield ("eof", address)
                return
            if not err:
                continue
            # The read failed: retry its window page by page so only bad pages are lost.
            window_end = address + want
            while address < window_end and (left is None or left > 0):
                step_end = min(address - address % self.page_size + self.page_size, window_end)
                if left is not None:
                    step_end = min(step_end, address + left)
                count, err = self._read(address, step_end - address)
                if count:
                    yield ("data", address, self.view[:count])
                    address += count
                    left = None if left is None else left - count
                elif err:
                    yield ("hole", Hole(address, step_end, errno.errorcode.get(err, str(err))))
                    address = step_end
                else:
                    yield ("eof", address)
                    return


MapCallback = Callable[[int, int], None]
Remark = Callable[[int, str], None]  # (verbosity level, text)


class _Regions:
    """Tracks the current dumped region and reports each one as it closes."""

    def __init__(self, on_region: MapCallback, result: WalkResult):
        self.on_region = on_region
        self.result = result
        self.start: int | None = None
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


class RamWalk:
    def __init__(self, source: DevMemory, sink: Sink, *, page_size: int, read_size: int,
                 limit: int = 0, on_region: MapCallback = lambda s, e: None,
                 remark: Remark = lambda level, text: None):
        self.source = source
        self.sink = sink
        self.reader = Reader(source, page_size, read_size, sink)
        self.limit = limit
        self.on_region = on_region
        self.remark = remark

    def run(self) -> WalkResult:
        # kept on the walk too, so a caller can account for what was done when the output fails
        self.result = result = WalkResult()
        regions = _Regions(self.on_region, result)
        ranges = self.source.ranges()
        try:
            for r in ranges:
                budget = self.limit - result.bytes_written if self.limit else None
                if budget is not None and budget <= 0:
                    result.stopped = "size limit (-s)"
                    break
                self.remark(2, f"range {r.start:#x}-{r.end:#x}")
                for item in self.reader.extents(r.start, r.end, budget):
                    kind = item[0]
                    if kind == "data":
                        _, address, view = item
                        self.sink.write(view)
                        regions.extend(address, len(view))
                        result.bytes_written += len(view)
                    elif kind == "sent":
                        _, address, count = item
                        regions.extend(address, count)
                        result.bytes_written += count
                    elif kind == "hole":
                        hole = item[1]
                        regions.close()
                        result.holes.append(hole)
                        self.remark(1, f"hole at {hole.start:#x}-{hole.end:#x}: {hole.reason}")
                    else:
                        address = item[1]
                        regions.close()
                        result.holes.append(Hole(address, r.end, "eof"))
                        self.remark(1, f"{self.source.name} ended early at {address:#x}")
            else:
                result.stopped = "end of ranges"
            if self.limit and result.bytes_written >= self.limit:
                result.stopped = "size limit (-s)"
        finally:
            regions.close()
        return result


class ScanWalk:
    """The original program's loop, address for address (see the module docstring)."""

    def __init__(self, source: DevMemory, sink: Sink, *, page_size: int, read_size: int,
                 exact_reads: bool, limit: int = 0, on_region: MapCallback = lambda s, e: None,
                 remark: Remark = lambda level, text: None):
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

    def run(self) -> WalkResult:
        # kept on the walk too, so a caller can account for what was done when the output fails
        self.result = result = WalkResult()
        regions = _Regions(self.on_region, result)
        end = self.source.scan_end()
        reader = self.reader
        read_into = reader._read_into
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

        def read(address: int, size: int) -> tuple[int, int]:
            nonlocal pending, batch_at
            if pending + size > capacity:
                flush()
            got, err = read_into(address, pending, size)
            if got:
                if not pending:
                    batch_at = address
                pending += got
            return got, err

        try:
            while not self.limit or count < self.limit:
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
                    flush()
                    regions.close()
                    result.holes.append(Hole(where, where + self.page_size,
                                             errno.errorcode.get(err, str(err))))
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
                        flush()
                        regions.close()
                        result.holes.append(Hole(where, where + self.page_size,
                                                 errno.errorcode.get(err, str(err))))
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
