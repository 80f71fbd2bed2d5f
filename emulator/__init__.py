"""A deterministic emulated machine: sparse RAM with holes, kernel interfaces and faults.

``Machine`` is the truth (layout and every byte); ``EmulatedMemory`` serves it in-process as a
memdump DevMemory with the kernel's behaviours; ``write_root`` lays it out as a fake root
directory (``proc/iomem``, ``proc/kcore``, ``dev/mem``, ``truth.json``) for ``memdump --root``.
"""

from __future__ import annotations

from emulator.machine import Machine  # noqa: F401
