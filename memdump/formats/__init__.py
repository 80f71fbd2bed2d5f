"""Image formats: one module per format, each holding its writer, detector and reader (one class,
``base.FormatWriter``'s subclass).

``raw`` is the original memdump's stream (holes left out; regions only in the ``-m`` map);
``padded``, ``lime`` and ``elf`` are structured: every region is whole, with unreadable pages
zero-filled and recorded. To add a format: a module here with its class, and a line in FORMATS.
"""

from __future__ import annotations

from typing import Dict, Sequence, Type

from memdump.errors import UsageError
from memdump.facts import NO_FACTS, MachineFacts
from memdump.formats.base import FormatWriter, Layout, Placed, plan_regions
from memdump.formats.elf import ElfWriter
from memdump.formats.lime import LimeWriter
from memdump.formats.padded import PaddedWriter
from memdump.formats.raw import RawWriter
from memdump.iomem import Range
from memdump.remarks import RegionCallback, no_region
from memdump.sink import Sink

WRITERS: Dict[str, Type[FormatWriter]] = {cls.name: cls for cls in (RawWriter, PaddedWriter, LimeWriter, ElfWriter)}
FORMATS = tuple(WRITERS)
STRUCTURED = tuple(name for name, cls in WRITERS.items() if cls.structured)


def format_class(name: str) -> Type[FormatWriter]:
    try:
        return WRITERS[name]
    except KeyError:
        raise UsageError(f"unknown format {name!r} (choose from {', '.join(FORMATS)})") from None


def writer_for(name: str, sink: Sink, regions: Sequence[Range], facts: MachineFacts = NO_FACTS,
               on_region: RegionCallback = no_region) -> FormatWriter:
    return format_class(name)(sink, regions, facts, on_region)


__all__ = ["FORMATS", "STRUCTURED", "WRITERS", "FormatWriter", "Layout", "Placed", "format_class",
           "plan_regions", "writer_for"]
