"""The machine being examined, seen through a root directory.

Every kernel interface memdump touches (``/dev/mem``, ``/proc/iomem``, ``/proc/kcore``, ...) is
resolved under ``Host.root`` so that tests and demos can point the whole tool at a fake machine
(``--root DIR``) written by the emulator.
"""

from __future__ import annotations

import gzip
import os
import re
from dataclasses import dataclass
from typing import Optional

from memdump.errors import UsageError
from memdump.iomem import Iomem


@dataclass(frozen=True)
class Host:
    root: str = "/"

    @classmethod
    def at(cls, root: str | None) -> "Host":
        root = root or "/"
        if not os.path.isdir(root):
            raise UsageError(f"--root {root}: no such directory")
        return cls(os.path.abspath(root))

    def path(self, absolute: str) -> str:
        """``/proc/iomem`` -> ``<root>/proc/iomem``."""
        if self.root == "/":
            return absolute
        return os.path.join(self.root, absolute.lstrip("/"))

    def exists(self, absolute: str) -> bool:
        return os.path.exists(self.path(absolute))

    def read_text(self, absolute: str) -> str | None:
        """The file's text, or None when it is missing or unreadable (probes never raise)."""
        try:
            with open(self.path(absolute), "rb") as handle:
                return handle.read().decode("utf-8", "replace")
        except OSError:
            return None

    def read_bytes(self, absolute: str) -> bytes | None:
        try:
            with open(self.path(absolute), "rb") as handle:
                return handle.read()
        except OSError:
            return None

    # -- kernel facts -------------------------------------------------------------------------

    def iomem(self) -> Optional[Iomem]:
        """/proc/iomem parsed, or None when it cannot be read (IomemError when it is garbled)."""
        text = self.read_text("/proc/iomem")
        return Iomem.parse(text) if text is not None else None

    def kernel_release(self) -> str:
        text = self.read_text("/proc/sys/kernel/osrelease")
        if text:
            return text.strip()
        return os.uname().release if self.root == "/" else "unknown"

    def machine_name(self) -> str:
        text = self.read_text("/proc/sys/kernel/hostname")
        if text:
            return text.strip()
        return os.uname().nodename if self.root == "/" else "unknown"

    def page_size(self) -> int:
        return os.sysconf("SC_PAGE_SIZE")

    def lockdown(self) -> str | None:
        """The active lockdown mode (``integrity``/``confidentiality``) or None."""
        text = self.read_text("/sys/kernel/security/lockdown")
        if not text:
            return None
        match = re.search(r"\[(\w+)\]", text)
        if not match or match.group(1) == "none":
            return None
        return match.group(1)

    def kernel_config(self, option: str) -> str | None:
        """The value of ``CONFIG_<option>`` from ``/proc/config.gz`` or ``/boot/config-<release>``."""
        text = None
        packed = self.read_bytes("/proc/config.gz")
        if packed:
            try:
                text = gzip.decompress(packed).decode("utf-8", "replace")
            except (OSError, EOFError):
                text = None
        if text is None:
            text = self.read_text(f"/boot/config-{self.kernel_release()}")
        if text is None:
            return None
        match = re.search(rf"^CONFIG_{option}=(\S+)$", text, re.MULTILINE)
        if match:
            return match.group(1)
        if re.search(rf"^# CONFIG_{option} is not set$", text, re.MULTILINE):
            return "n"
        return None
