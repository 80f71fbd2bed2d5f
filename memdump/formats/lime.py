"""LiME v1: per region a 32-byte little-endian header, then the region's bytes.

Header ``<IIQQ8s>``: magic 0x4C694D45 ("EMiL" on disk), version 1, start, **inclusive** end,
8 reserved zero bytes. Records ascend, never overlap, and nothing follows the last one: that is
what LiME writes and what Volatility 3's LimeLayer and AVML accept.
"""

from __future__ import annotations

import os
import struct
from typing import List, Optional

from memdump.errors import ImageError
from memdump.formats.base import FormatWriter, Layout, Placed

MAGIC = 0x4C694D45
VERSION = 1
HEADER = struct.Struct("<IIQQ8s")
MAGIC_BYTES = MAGIC.to_bytes(4, "little")  # b"EMiL"


def pack_header(start: int, end: int) -> bytes:
    """The record header for half-open ``[start, end)``."""
    return HEADER.pack(MAGIC, VERSION, start, end - 1, bytes(8))


class LimeWriter(FormatWriter):
    name = "lime"

    @classmethod
    def detect(cls, head: bytes) -> bool:
        return head[:4] == MAGIC_BYTES

    @classmethod
    def read(cls, fd: int, path: str, size: int) -> Layout:
        regions: List[Placed] = []
        offset = 0
        previous_end: Optional[int] = None
        while offset < size:
            blob = os.pread(fd, HEADER.size, offset)
            if len(blob) < HEADER.size:
                raise ImageError(path, offset, f"truncated LiME header ({len(blob)} of {HEADER.size} bytes)")
            magic, version, start, last, _reserved = HEADER.unpack(blob)
            if magic != MAGIC:
                raise ImageError(path, offset, f"bad LiME magic {magic:#010x} (expected {MAGIC:#010x})")
            if version != VERSION:
                raise ImageError(path, offset, f"unsupported LiME version {version}")
            if last < start:
                raise ImageError(path, offset, f"LiME record ends ({last:#x}) before it starts ({start:#x})")
            if previous_end is not None and start < previous_end:
                raise ImageError(path, offset, f"LiME record {start:#x}-{last:#x} overlaps or precedes "
                                               f"the previous one (ending at {previous_end - 1:#x})")
            length = last - start + 1
            data = offset + HEADER.size
            if data + length > size:
                raise ImageError(path, offset, f"LiME record {start:#x}-{last:#x} runs past the end of the "
                                               f"file ({length:#x} bytes needed, {size - data:#x} left)")
            regions.append(Placed(start, last + 1, data))
            previous_end = last + 1
            offset = data + length
        if not regions:
            raise ImageError(path, 0, "no LiME records")
        return Layout(regions)

    def layout(self) -> List[Placed]:
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
