"""The two callbacks library code takes: remarks (what it did, for a caller to show or not) and
regions (each dumped region as it closes, for the ``-m`` map)."""

from __future__ import annotations

from typing import Callable

#: (verbosity level, text): 0 is a warning everyone should see, 1 and 2 are ``-v`` and ``-vv``
Remark = Callable[[int, str], None]
#: (start, end) of a region of the output, half-open, called as each one closes
RegionCallback = Callable[[int, int], None]


def no_remark(level: int, text: str) -> None:
    """The default Remark: say nothing."""


def no_region(start: int, end: int) -> None:
    """The default RegionCallback: keep no map."""
