"""Faults to inject into the emulated machine's reads: EIO pages, short reads, EINTR."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import FrozenSet


@dataclass
class Faults:
    eio_pages: FrozenSet[int] = field(default_factory=frozenset)  # page addresses failing with EIO
    short_every: int = 0  # every Nth multi-page read stops at its first page boundary
    eintr_every: int = 0  # every Nth read is interrupted once (EINTR) before it succeeds

    def to_dict(self) -> dict:
        return {"eio_pages": sorted(self.eio_pages), "short_every": self.short_every,
                "eintr_every": self.eintr_every}

    @classmethod
    def from_dict(cls, data: dict) -> "Faults":
        return cls(frozenset(data.get("eio_pages", ())), data.get("short_every", 0),
                   data.get("eintr_every", 0))
