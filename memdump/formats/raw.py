"""raw: the original memdump's output, readable bytes concatenated with holes left out.

The regions live only in the ``-m`` map (one ``0x<start> 0x<end>`` line each), so a hole splits
a planned region into the output regions the map lists; a ``-s`` cap may end the output inside a
region. Read back through its map: the file is exactly as long as the map's regions together.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

from memdump.formats.base import FormatWriter, Placed, back_to_back
from memdump.iomem import Range
from memdump.sources.base import Hole


class RawWriter(FormatWriter):
    name = "raw"
    structured = False
    mapped = True

    def __init__(self, *args, **kwargs):
        self.written: List[Range] = []      # output regions closed so far
        self._open: Optional[int] = None    # start address of the output region being written
        super().__init__(*args, **kwargs)

    @classmethod
    def place(cls, ranges: Sequence[Range]) -> List[Placed]:
        return back_to_back(ranges)

    def layout(self) -> List[Placed]:
        return back_to_back(self.regions)

    def output_regions(self) -> List[Placed]:
        regions = list(self.written)
        if self._open is not None:
            regions.append(Range(self._open, self._address()))
        return back_to_back(regions)

    def _address(self) -> int:
        return self.regions[self.current].start + self.filled

    def data(self, view) -> None:
        if self._open is None:
            self._open = self._address()
        super().data(view)

    def sent(self, count: int) -> None:
        if self._open is None:
            self._open = self._address()
        self.filled += count

    def hole(self, hole: Hole) -> None:
        self._close()
        self.filled += hole.end - hole.start

    def end_region(self, index: int) -> None:
        # a -s cap may end the output before the region's end
        if self.current != index:
            raise RuntimeError(f"region {index} is not the one open")
        self._close()
        self.current = None

    def close_open(self) -> None:
        if self.current is not None:
            self._close()

    def _close(self) -> None:
        if self._open is not None:
            start, end = self._open, self._address()
            self._open = None
            self.written.append(Range(start, end))
            self.on_region(start, end)

    def position(self) -> Optional[int]:
        if self._open is not None:
            return self._address()
        return self.written[-1].end if self.written else None
