"""raw: the original memdump's output, readable bytes concatenated with holes left out.

Dumps in raw go through ``memdump.walk`` (byte-identical to the original); this writer serves
``convert --to raw``, where the regions are known and complete.
"""

from __future__ import annotations

from memdump.formats.base import FormatWriter, Placed


class RawWriter(FormatWriter):
    name = "raw"
    structured = False

    def layout(self) -> list[Placed]:
        placed, offset = [], 0
        for r in self.regions:
            placed.append(Placed(r.start, r.end, offset))
            offset += r.size
        return placed
