"""The shared base of devices whose file offset is the physical address (``/dev/mem``, memdump's
module): read only inside /proc/iomem's System RAM, never MMIO, whatever the device would allow.
"""

from __future__ import annotations

from typing import List

from memdump.errors import SourceUnavailable
from memdump.facts import MachineFacts
from memdump.host import Host
from memdump.iomem import Range
from memdump.remarks import Remark, no_remark
from memdump.sources.base import FileDevMemory, iomem_ram
from memdump.sources.kcore import host_facts


class PhysicalRamDevice(FileDevMemory):
    def __init__(self, host: Host, kernel: bool = False):
        if kernel:
            raise SourceUnavailable(self.name, "serves physical memory only (-k needs kmem or kcore)")
        self._ram = iomem_ram(host, self.name)
        super().__init__(host, kernel)

    def ranges(self) -> List[Range]:
        return list(self._ram)

    def machine_facts(self, remark: Remark = no_remark) -> MachineFacts:
        # the device reads the host's own RAM: the host's /proc/kcore describes it
        return host_facts(self, remark)
