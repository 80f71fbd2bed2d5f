"""Image formats: one module per format, one writer base (``base.FormatWriter``).

``raw`` is the original memdump's stream (holes left out; regions only in the ``-m`` map);
``padded``, ``lime`` and ``elf`` are structured: every region is whole, with unreadable pages
zero-filled and recorded.
"""

from __future__ import annotations

from typing import Sequence

from memdump.errors import UsageError
from memdump.formats.base import FormatWriter, ImageMeta, Placed, plan_regions
from memdump.formats.elf import ElfWriter
from memdump.formats.lime import LimeWriter
from memdump.formats.padded import PaddedWriter
from memdump.formats.raw import RawWriter
from memdump.iomem import Range
from memdump.sink import Sink

WRITERS: dict[str, type[FormatWriter]] = {
    "raw": RawWriter,
    "padded": PaddedWriter,
    "lime": LimeWriter,
    "elf": ElfWriter,
}
FORMATS = tuple(WRITERS)
STRUCTURED = tuple(name for name, cls in WRITERS.items() if cls.structured)


def writer_for(name: str, sink: Sink, regions: Sequence[Range], meta: ImageMeta = ImageMeta()) -> FormatWriter:
    try:
        cls = WRITERS[name]
    except KeyError:
        raise UsageError(f"unknown format {name!r} (choose from {', '.join(FORMATS)})") from None
    return cls(sink, regions, meta)


__all__ = ["FORMATS", "STRUCTURED", "WRITERS", "FormatWriter", "ImageMeta", "Placed", "plan_regions",
           "writer_for"]
