"""What a machine says about itself that an image should keep: the kernel's VMCOREINFO note and
the direct map's base.

crash, drgn and Volatility find KASLR's offset, the page tables and the release through
VMCOREINFO; an ELF core's ``p_vaddr`` is the direct-map address of each physical region. A source
knows where to find these for the memory it reads (``DevMemory.machine_facts``); formats only
record them. Nothing here is required: a fact that cannot be found is None.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional


@dataclass(frozen=True)
class MachineFacts:
    """VMCOREINFO's text and ``vaddr - paddr`` of the direct map, each when known; ``origin``
    says where each came from (for the manifest), by fact name."""

    vmcoreinfo: Optional[bytes] = None
    direct_map_base: Optional[int] = None
    origin: Dict[str, Optional[str]] = field(default_factory=dict, compare=False)

    def record(self) -> dict:
        """The manifest's account of the facts: where VMCOREINFO came from, the base in hex."""
        return {"vmcoreinfo": self.origin.get("vmcoreinfo"),
                "direct_map_base": (f"{self.direct_map_base:#x}"
                                    if self.direct_map_base is not None else None)}


NO_FACTS = MachineFacts()
