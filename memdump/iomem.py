"""/proc/iomem: the kernel's map of physical address space.

The file is a tree written with two spaces of indent per level and **inclusive** end addresses.
Inside memdump every range is half-open ``[start, end)``; the conversion happens here and only here.
RAM is every entry whose name begins with "System RAM", at any depth, so nested entries such as
``System RAM (virtio_mem)`` under a virtio device or ``System RAM (kmem)`` under a dax device count.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Iterator, NamedTuple

from memdump.errors import MemdumpError


class Range(NamedTuple):
    """A half-open address range ``[start, end)``."""

    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start

    def __str__(self) -> str:
        return f"[{self.start:#x}, {self.end:#x})"


@dataclass
class Resource:
    start: int
    end: int  # half-open
    name: str
    depth: int
    children: list["Resource"] = field(default_factory=list)

    @property
    def is_ram(self) -> bool:
        return self.name.startswith("System RAM")

    def walk(self) -> Iterator["Resource"]:
        yield self
        for child in self.children:
            yield from child.walk()


class IomemError(MemdumpError):
    pass


_LINE = re.compile(r"^( *)([0-9a-fA-F]+)-([0-9a-fA-F]+) : (.*)$")


@dataclass
class Iomem:
    """A parsed /proc/iomem: the top-level resources and whether addresses were hidden."""

    resources: list[Resource]

    @classmethod
    def parse(cls, text: str, origin: str = "/proc/iomem") -> "Iomem":
        roots: list[Resource] = []
        stack: list[Resource] = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            match = _LINE.match(line)
            if not match:
                raise IomemError(f"{origin}:{number}: cannot parse {line.strip()!r}")
            indent, first, last, name = match.groups()
            depth = len(indent) // 2
            start, last_inclusive = int(first, 16), int(last, 16)
            if last_inclusive < start and not (start == 0 and last_inclusive == 0):
                raise IomemError(f"{origin}:{number}: end before start in {line.strip()!r}")
            node = Resource(start, last_inclusive + 1, name.strip(), depth)
            while stack and stack[-1].depth >= depth:
                stack.pop()
            (stack[-1].children if stack else roots).append(node)
            stack.append(node)
        return cls(roots)

    def walk(self) -> Iterator[Resource]:
        for resource in self.resources:
            yield from resource.walk()

    @property
    def addresses_hidden(self) -> bool:
        """True when the kernel zeroed every address (a reader without CAP_SYS_ADMIN)."""
        entries = list(self.walk())
        return bool(entries) and all(r.start == 0 and r.end == 1 for r in entries)

    def ram_ranges(self) -> list[Range]:
        """Sorted, merged, half-open System RAM ranges (nested entries included)."""
        return merge_ranges(Range(r.start, r.end) for r in self.walk() if r.is_ram)

    def find(self, name: str) -> list[Range]:
        """Every range whose name is exactly ``name`` (e.g. "Kernel code")."""
        return [Range(r.start, r.end) for r in self.walk() if r.name == name]

    def format(self) -> str:
        """Render back in /proc/iomem's own syntax (inclusive ends, two-space indent)."""
        lines = []
        for r in self.walk():
            lines.append(f"{'  ' * r.depth}{r.start:08x}-{r.end - 1:08x} : {r.name}")
        return "\n".join(lines) + "\n"


def merge_ranges(ranges: Iterable[Range]) -> list[Range]:
    """Sort and merge overlapping or touching half-open ranges."""
    merged: list[Range] = []
    for start, end in sorted(ranges):
        if end <= start:
            continue
        if merged and start <= merged[-1].end:
            if end > merged[-1].end:
                merged[-1] = Range(merged[-1].start, end)
        else:
            merged.append(Range(start, end))
    return merged


def intersect_ranges(left: list[Range], right: list[Range]) -> list[Range]:
    """The parts of sorted, merged ``left`` that also lie in sorted, merged ``right``."""
    result: list[Range] = []
    j = 0
    for start, end in left:
        while j < len(right) and right[j].end <= start:
            j += 1
        k = j
        while k < len(right) and right[k].start < end:
            lo, hi = max(start, right[k].start), min(end, right[k].end)
            if lo < hi:
                result.append(Range(lo, hi))
            k += 1
    return result


def subtract_ranges(left: list[Range], right: list[Range]) -> list[Range]:
    """The parts of sorted, merged ``left`` outside sorted, merged ``right``."""
    result: list[Range] = []
    for start, end in left:
        cursor = start
        for r in right:
            if r.end <= cursor or r.start >= end:
                continue
            if r.start > cursor:
                result.append(Range(cursor, r.start))
            cursor = max(cursor, r.end)
        if cursor < end:
            result.append(Range(cursor, end))
    return result
