"""LiME v1: per region a 32-byte little-endian header, then the region's bytes.

Header ``<IIQQ8s>``: magic 0x4C694D45 ("EMiL" on disk), version 1, start, **inclusive** end,
8 reserved zero bytes. Records ascend, never overlap, and nothing follows the last one: that is
what LiME writes and what Volatility 3's LimeLayer and AVML accept.
"""

from __future__ import annotations

import struct

from memdump.formats.base import FormatWriter, Placed

MAGIC = 0x4C694D45
VERSION = 1
HEADER = struct.Struct("<IIQQ8s")


def pack_header(start: int, end: int) -> bytes:
    """The record header for half-open ``[start, end)``."""
    return HEADER.pack(MAGIC, VERSION, start, end - 1, bytes(8))


class LimeWriter(FormatWriter):
    name = "lime"

    def layout(self) -> list[Placed]:
        placed, offset = [], 0
        for r in self.regions:
            offset += HEADER.size
            placed.append(Placed(r.start, r.end, offset))
            offset += r.size
        return placed

    def begin_region(self, index: int) -> None:
        super().begin_region(index)
        region = self.regions[index]
        self.sink.write(pack_header(region.start, region.end))
