"""padded: file offset = physical address; what is not memory (or could not be read) is zeros.

To a regular file the zeros are seeks, so the image is sparse and costs only the RAM it holds;
to a pipe they are written. The digest covers the zeros either way: it is the stream's digest.
Read back through its map: the file ends where the last region ends.
"""

from __future__ import annotations

from typing import List, Sequence

from memdump.formats.base import FormatWriter, Placed
from memdump.iomem import Range


class PaddedWriter(FormatWriter):
    name = "padded"
    mapped = True

    @classmethod
    def place(cls, ranges: Sequence[Range]) -> List[Placed]:
        return [Placed(r.start, r.end, r.start) for r in ranges]

    def layout(self) -> List[Placed]:
        return self.place(self.regions)

    def begin_region(self, index: int) -> None:
        super().begin_region(index)
        self.sink.skip(self.regions[index].start - self.sink.written)

    def zeros(self, count: int) -> None:
        self.sink.skip(count)
        self.filled += count

    def finish(self) -> None:
        self.sink.end_sparse()
