"""padded: file offset = physical address; what is not memory (or could not be read) is zeros.

To a regular file the zeros are seeks, so the image is sparse and costs only the RAM it holds;
to a pipe they are written. The digest covers the zeros either way: it is the stream's digest.
"""

from __future__ import annotations

from memdump.formats.base import FormatWriter, Placed


class PaddedWriter(FormatWriter):
    name = "padded"

    def layout(self) -> list[Placed]:
        return [Placed(r.start, r.end, r.start) for r in self.regions]

    def begin_region(self, index: int) -> None:
        super().begin_region(index)
        self.sink.skip(self.regions[index].start - self.sink.written)

    def zeros(self, count: int) -> None:
        self.sink.skip(count)
        self.filled += count

    def finish(self) -> None:
        self.sink.end_sparse()
